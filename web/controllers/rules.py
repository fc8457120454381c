"""/rules: merchandising rules (pin, hide, boost, bury; each with an optional active period), admin only.
They apply to every widget and to the feed asked inside POST /recommendations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED

from appliance.rules import Rule
from appliance.types import now_utc
from web.access import Scope, needs
from web.ids import WireId, ext, known
from web.schemas import Moment, Text, moment
from web.services import Services

Price = Annotated[float, msgspec.Meta(ge=0)]
LAST = datetime(9999, 12, 31)  # a rule's period may reach far ahead (a standing pin)


class RuleIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A rule: `kind`, what it matches (all given conditions), and its parameters."""

    kind: Literal["pin", "hide", "boost", "bury"]
    product_id: WireId | None = None  # pin: the product pinned; otherwise one product matched
    brand: Text | None = None
    category: Text | None = None  # any level of the category path
    min_price: Price | None = None
    max_price: Price | None = None
    position: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None  # pin: 1-based
    strength: float | None = None  # boost / bury: in (0, 1]
    starts_at: Moment | None = None
    ends_at: Moment | None = None

    def to_domain(self, product_key: int | None) -> Rule:
        return Rule(
            self.kind, product_key, self.brand, self.category, self.min_price, self.max_price, self.position,
            self.strength, moment(self.starts_at, "starts_at", LAST) if self.starts_at else None,
            moment(self.ends_at, "ends_at", LAST) if self.ends_at else None,
        )


class RuleOut(msgspec.Struct):
    rule_id: int
    kind: str
    product_id: str | None
    brand: str | None
    category: str | None
    min_price: float | None
    max_price: float | None
    position: int | None
    strength: float | None
    starts_at: datetime | None
    ends_at: datetime | None
    active: bool  # active now


def _out(services: Services, rule: Rule) -> RuleOut:
    product = None if rule.product_id is None else ext(services.ids.products, rule.product_id)
    aware = [t.replace(tzinfo=UTC) if t else None for t in (rule.starts_at, rule.ends_at)]
    return RuleOut(rule.rule_id, rule.kind, product, rule.brand, rule.category, rule.min_price, rule.max_price,
                   rule.position, rule.strength, aware[0], aware[1], rule.active(now_utc()))


def _rule(services: Services, data: RuleIn) -> Rule:
    key = None if data.product_id is None else known(services.ids.products, str(data.product_id), "product")
    return data.to_domain(key)


class RuleController(Controller):
    path = "/rules"
    tags = ["merchandising"]
    opt = needs(Scope.ADMIN)

    @get("/", operation_id="listRules", sync_to_thread=True)
    def list_rules(self, state: State) -> list[RuleOut]:
        """Every rule, oldest first, with whether it is active now."""
        return [_out(state.services, r) for r in state.services.widgets.rules.all()]

    @post("/", operation_id="createRule", sync_to_thread=True, status_code=HTTP_201_CREATED)
    def create(self, state: State, data: JSONBody[RuleIn]) -> RuleOut:
        """Add a rule; it applies from its next request on."""
        services: Services = state.services
        return _out(services, services.widgets.rules.add(_rule(services, data), now_utc()))

    @get("/{rule_id:int}", operation_id="getRule", sync_to_thread=True)
    def get_rule(self, state: State, rule_id: int) -> RuleOut:
        return _out(state.services, state.services.widgets.rules.get(rule_id))

    @put("/{rule_id:int}", operation_id="replaceRule", sync_to_thread=True)
    def replace_rule(self, state: State, rule_id: int, data: JSONBody[RuleIn]) -> RuleOut:
        """Replace a rule whole (its id stays)."""
        services: Services = state.services
        return _out(services, services.widgets.rules.replace(rule_id, _rule(services, data)))

    @delete("/{rule_id:int}", operation_id="deleteRule", sync_to_thread=True)
    def delete_rule(self, state: State, rule_id: int) -> None:
        state.services.widgets.rules.delete(rule_id)
