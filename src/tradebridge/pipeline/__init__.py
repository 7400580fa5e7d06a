"""Pure decisions on a signal: validate, risk, route; a broker command or a denial, no I/O."""
