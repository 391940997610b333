"""Stochastic sites: where a model draws random numbers in training mode, found the same way in
every framework so that the adapters can list them by port path (framework-free)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["collect_sites"]


def collect_sites(
    nodes: Iterable[tuple[str, Any]], dropout: type, rate_attribute: str, drop_path: type
) -> dict[str, tuple[str, float]]:
    """Every active (rate > 0) stochastic site among ``(path, module)`` pairs: path ->
    (kind, rate). Kinds: ``dropout`` (element-wise on activations, modules of class
    ``dropout``, rate in ``rate_attribute``), ``drop path`` (per sample, class ``drop_path``,
    rate ``drop_prob``) and ``attention dropout`` (element-wise on the attention probabilities:
    a module's float ``attn_drop``, listed at ``<path>.attn_drop``)."""
    sites: dict[str, tuple[str, float]] = {}
    for path, node in nodes:
        if isinstance(node, dropout):
            sites[path] = ("dropout", float(getattr(node, rate_attribute)))
        elif isinstance(node, drop_path):
            sites[path] = ("drop path", float(node.drop_prob))
        attn_drop = getattr(node, "attn_drop", None)
        if isinstance(attn_drop, (int, float)) and not isinstance(attn_drop, bool):
            sites[f"{path}.attn_drop" if path else "attn_drop"] = (
                "attention dropout",
                float(attn_drop),
            )
    return {path: site for path, site in sites.items() if site[1] > 0.0}
