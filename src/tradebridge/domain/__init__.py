"""Pure domain types: no I/O, no clocks; the current date is always an argument."""
