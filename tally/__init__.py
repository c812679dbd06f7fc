"""Tally's Python client: a job's results as rows, Arrow or pandas, exports downloaded, from a script or a
notebook. Not part of the service (Chalice packages app.py, chalicelib/ and vendor/ only).

    from tally import Tally
    rows = Tally(stage="dev").results("bdb-agg-2a", order_by="adRevenue", desc=True)
    frame = rows.to_pandas()
"""
from .client import Results, Tally
from .transport import ApiError, NotDeployed, TallyClientError, Unreachable

__all__ = ["Tally", "Results", "ApiError", "NotDeployed", "TallyClientError", "Unreachable"]
