"""Reference data: the configured users' accounts, and the contracts the simulator knows.

Contract ids are computed from root, year and month, so they are the same in every run and
``contract(id)`` knows contracts nobody has looked up by name yet. ``find_contract`` returns
expired contracts too (``is_expired`` says so); names in months a product does not list,
unknown roots and malformed names give None.
"""

from __future__ import annotations

from datetime import date

from tradebridge.domain.contracts import ContractSymbol, month_code, parse_contract
from tradebridge.domain.contracts import listed_contracts as listed_symbols
from tradebridge.domain.products import PRODUCTS
from tradebridge.errors import InvalidSymbol
from tradebridge.sim.clock import Clock
from tradebridge.sim.config import SimAccountConfig, SimConfig
from tradebridge.sim.model import SimAccount, SimContract

# Contract ids: base + root index * _ROOT_SPAN + months since January 2000.
_CONTRACT_ID_BASE = 2_000_000
_MATURITY_ID_BASE = 5_000_000
_ROOT_SPAN = 10_000
_FIRST_YEAR = 2000
_LAST_YEAR = _FIRST_YEAR + _ROOT_SPAN // 12 - 1
_ROOTS = tuple(PRODUCTS)
_NAME_CACHE_SIZE = 10_000  # bounded: names come from clients


def _contract_offset(symbol: ContractSymbol) -> int | None:
    if not _FIRST_YEAR <= symbol.year <= _LAST_YEAR or symbol.root not in PRODUCTS:
        return None
    months = (symbol.year - _FIRST_YEAR) * 12 + symbol.month - 1
    return _ROOTS.index(symbol.root) * _ROOT_SPAN + months


class Reference:
    """The accounts of the configured users and every contract looked up so far."""

    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self._clock = clock
        self._accounts: dict[int, SimAccount] = {}
        self._accounts_by_name: dict[str, SimAccount] = {}
        self._accounts_by_bridge_id: dict[str, SimAccount] = {}
        self._account_configs: dict[int, SimAccountConfig] = {}
        self._contracts: dict[int, SimContract] = {}
        self._names: dict[str, SimContract | None] = {}
        self._names_day: date | None = None
        self._listed: tuple[date, list[SimContract]] | None = None
        for user in config.users:
            for cfg in user.accounts:
                if cfg.id in self._accounts:
                    raise ValueError(f"account id {cfg.id} is configured twice")
                account = SimAccount(cfg.id, cfg.name, cfg.bridge_id, user.id, cfg.readonly)
                self._accounts[cfg.id] = account
                self._accounts_by_name[cfg.name] = account
                self._accounts_by_bridge_id[cfg.bridge_id] = account
                self._account_configs[cfg.id] = cfg

    # --- accounts -------------------------------------------------------------------------
    def accounts(self, user_id: int | None = None) -> list[SimAccount]:
        """Return all accounts, or those of one user."""
        return [a for a in self._accounts.values() if user_id is None or a.user_id == user_id]

    def account(self, account_id: int) -> SimAccount | None:
        """Return an account by native id."""
        return self._accounts.get(account_id)

    def account_of(self, account_id: int) -> SimAccount:
        """Return an account that must exist (KeyError if unknown)."""
        return self._accounts[account_id]

    def account_by_name(self, name: str) -> SimAccount | None:
        """Return an account by name (``accountSpec``)."""
        return self._accounts_by_name.get(name)

    def account_by_bridge_id(self, bridge_id: str) -> SimAccount | None:
        """Return an account by its bridge id (``D...``)."""
        return self._accounts_by_bridge_id.get(bridge_id)

    def account_config(self, account_id: int) -> SimAccountConfig:
        """Return the configuration an account was made from (KeyError if unknown)."""
        return self._account_configs[account_id]

    # --- contracts ------------------------------------------------------------------------
    def find_contract(self, name: str) -> SimContract | None:
        """Return the contract named ``name`` (expired ones included), or None if no such."""
        today = self._today()
        if self._names_day != today:  # one-digit years resolve relative to today
            self._names.clear()
            self._names_day = today
        if name in self._names:
            return self._names[name]
        try:
            contract = self._register(parse_contract(name, today))
        except InvalidSymbol:
            contract = None
        if len(self._names) < _NAME_CACHE_SIZE:
            self._names[name] = contract
        return contract

    def contract(self, contract_id: int) -> SimContract | None:
        """Return a contract by id."""
        known = self._contracts.get(contract_id)
        if known is not None:
            return known
        root_index, months = divmod(contract_id - _CONTRACT_ID_BASE, _ROOT_SPAN)
        if not 0 <= root_index < len(_ROOTS):
            return None
        year, month = divmod(months, 12)
        return self._register(ContractSymbol(_ROOTS[root_index], _FIRST_YEAR + year, month + 1))

    def contract_of(self, contract_id: int) -> SimContract:
        """Return a contract already looked up (KeyError if it never was)."""
        return self._contracts[contract_id]

    def suggest_contracts(self, text: str, limit: int) -> list[SimContract]:
        """Return unexpired contracts whose name starts with ``text``, front month first."""
        prefix = text.strip().upper()
        if limit <= 0:
            return []
        found = {c.id: c for c in self.listed_contracts() if c.name.startswith(prefix)}
        exact = self.find_contract(prefix) if prefix else None
        if exact is not None and not self.is_expired(exact):
            found.setdefault(exact.id, exact)

        def rank(c: SimContract) -> tuple[bool, str, date]:
            return (c.symbol.root != prefix, c.symbol.root, c.symbol.expiry())

        return sorted(found.values(), key=rank)[:limit]

    def listed_contracts(self) -> list[SimContract]:
        """Return every unexpired contract the simulator lists now."""
        today = self._today()
        if self._listed is None or self._listed[0] != today:
            contracts = []
            for root in _ROOTS:
                for symbol in listed_symbols(root, today):
                    contract = self._register(symbol)
                    if contract is not None:
                        contracts.append(contract)
            self._listed = (today, contracts)
        return list(self._listed[1])

    def is_expired(self, contract: SimContract) -> bool:
        """Return whether a contract no longer trades at the engine's clock."""
        return contract.symbol.is_expired(self._today())

    def _today(self) -> date:
        return self._clock.now().date()

    def _register(self, symbol: ContractSymbol) -> SimContract | None:
        offset = _contract_offset(symbol)
        if offset is None:
            return None
        contract_id = _CONTRACT_ID_BASE + offset
        known = self._contracts.get(contract_id)
        if known is not None:
            return known
        prod = PRODUCTS[symbol.root]
        if month_code(symbol.month) not in prod.listed_months:
            return None
        contract = SimContract(contract_id, symbol, prod, _MATURITY_ID_BASE + offset)
        self._contracts[contract_id] = contract
        return contract
