"""Pure aggregation: aggregate functions, the per-group state a partial holds, and the merge of partials.

Nothing here knows about S3, Lambda or the clock. A partial is an Arrow table with one row per group: the key
columns, then the state columns of every aggregate. `merge` is associative and commutative with the empty
partial as identity, which is what lets mappers, byte ranges and reducers combine work in any order.
"""
from .catalog import BUILT_IN, parse_aggregate
from .functions import FUNCTIONS, AggregateFunction, AggregateSpec
from .plan import AggregationPlan
from .udaf import Serializer, register_aggregate

__all__ = ["BUILT_IN", "FUNCTIONS", "AggregateFunction", "AggregateSpec", "AggregationPlan", "Serializer",
           "parse_aggregate", "register_aggregate"]
