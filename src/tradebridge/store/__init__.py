"""Storage: the PostgreSQL ledger and its migrations, Redis tokens, embedded servers."""
