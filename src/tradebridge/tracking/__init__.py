"""Placing ledger rows and following them: dispatcher, tracker (broker events), reconcile."""
