"""The client moved to the `tally` package (tally/client.py), one client for the CLI, the demo and users'
scripts; these names stay for code written against them."""
from tally.client import Tally as TallyClient
from tally.transport import ApiError, Signer, Unreachable, api_key_signer, signer_for, sigv4_signer

__all__ = ["TallyClient", "ApiError", "Signer", "Unreachable", "api_key_signer", "signer_for", "sigv4_signer"]
