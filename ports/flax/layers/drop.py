"""Stochastic depth, following ``nnx.Dropout``'s conventions (``deterministic``, rng stream)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["drop_path", "DropPath"]


def dropout_key(
    rngs: nnx.Rngs | nnx.RngStream | jax.Array | None,
    default: nnx.RngStream | None,
    rng_collection: str,
    owner: str,
) -> jax.Array:
    """A PRNG key from a call-time ``rngs`` (Rngs, RngStream or key) or the module's own stream,
    in that order of precedence, as ``nnx.Dropout`` resolves it."""
    if rngs is None:
        rngs = default
    if rngs is None:
        raise ValueError(
            f"{owner}: `deterministic` is False, but no `rngs` was given to the constructor "
            "or the call."
        )
    if isinstance(rngs, nnx.Rngs):
        return rngs[rng_collection]()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    raise TypeError(f"rngs must be a Rngs, RngStream or jax.Array, but got {type(rngs)}.")


def drop_path(
    x: jax.Array,
    drop_prob: float = 0.0,
    training: bool = False,
    key: jax.Array | None = None,
) -> jax.Array:
    """Zero whole samples with probability ``drop_prob`` and scale the survivors by 1 / keep.

    x: (B, ...); one Bernoulli(keep) draw per sample from ``key``. Identity when not training or
    drop_prob == 0; zeros when drop_prob == 1.
    """
    if drop_prob == 0.0 or not training:
        return x
    if drop_prob == 1.0:
        return jnp.zeros_like(x)
    if key is None:
        raise ValueError("drop_path needs a PRNG `key` when training with drop_prob > 0")
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(key, p=keep, shape=shape)
    mask = jnp.broadcast_to(mask, x.shape)
    return jax.lax.select(mask, x / keep, jnp.zeros_like(x))


class DropPath(nnx.Module):
    """Per-sample stochastic depth. (B, ...) -> (B, ...).

    Like ``nnx.Dropout``: active while ``deterministic`` is False (``model.train()``), identity
    after ``model.eval()``; masks are drawn from the ``rng_collection`` stream forked from
    ``rngs`` at construction, or from ``rngs`` given at call time.
    """

    def __init__(
        self,
        drop_prob: float = 0.0,
        *,
        deterministic: bool = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.drop_prob = drop_prob
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        if isinstance(rngs, nnx.Rngs):
            self.rngs = rngs[rng_collection].fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(f"rngs must be a Rngs, RngStream or None, but got {type(rngs)}.")

    def __call__(
        self,
        x: jax.Array,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.drop_prob == 0.0:
            return x
        if self.drop_prob == 1.0:
            return jnp.zeros_like(x)
        key = dropout_key(rngs, self.rngs, self.rng_collection, "DropPath")
        return drop_path(x, self.drop_prob, training=True, key=key)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, DropPath is the identity.
        """
        if deterministic is not None:
            self.deterministic = deterministic
