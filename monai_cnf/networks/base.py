"""The one protocol every likelihood model p(y | x) of this project implements (the CNF and the factored baseline).

Callers (the sample inferer, the calibration runner, the evaluator, the bundles) use only these members, so no code
asks which kind of model it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

import torch
from torch import Tensor, nn

__all__ = ["ConditionalLikelihoodModel", "Task"]


class Task(str, Enum):
    """What a model's target ``y`` is: binary labels (segmentation), 8-bit images (super-resolution), or reals."""

    segmentation = "segmentation"
    super_resolution = "super_resolution"
    continuous = "continuous"


class ConditionalLikelihoodModel(nn.Module):
    r"""A conditional likelihood model :math:`p(y \mid x)` with MONAI's forward.

    Members:

    * :meth:`log_prob` ``(y, x) -> (B,)`` nats (a lower bound for dequantized flows);
    * :meth:`bits_per_dim` ``(y, x, mask=None) -> (B,)``: :math:`-\log_2 p(y \mid x) / D`, ``D`` the real elements;
    * :meth:`sample` ``(x, num_samples, temperature, generator, chunk_size) -> (S, B, C, *spatial)``, and
      :meth:`sample_chunks`, the same samples chunk by chunk;
    * :meth:`forward` ``(x) -> (B, C, *spatial)``, the deterministic prediction;
    * :attr:`task`, a :class:`Task`;
    * :meth:`exact_moments`: the mean and second moment of the samples when the model has them in closed form.

    A subclass implements the members its callers use; the others raise ``NotImplementedError`` naming the class.

    Example:
        >>> from monai_cnf.networks import ConditionalNormalizingFlow, FactoredBaseline
        >>> issubclass(ConditionalNormalizingFlow, ConditionalLikelihoodModel)
        True
        >>> issubclass(FactoredBaseline, ConditionalLikelihoodModel)
        True
    """

    #: Samples drawn per pass by :meth:`sample` unless told otherwise.
    default_chunk_size: int = 1

    @property
    def task(self) -> Task:
        """The task the model serves (what its target is)."""
        raise NotImplementedError(f"{type(self).__name__} does not say which task it serves (Task).")

    def log_prob(self, y: Tensor, x: Tensor, num_samples: int = 1) -> Tensor:
        """``log p(y | x)`` in nats, shape ``(B,)``."""
        raise NotImplementedError(f"{type(self).__name__} has no log_prob.")

    def bits_per_dim(self, y: Tensor, x: Tensor, num_samples: int = 1, mask: Tensor | None = None) -> Tensor:
        """Bits per real label element, ``-log2 p / D``, ``D`` the elements of ``y`` inside ``mask`` (all without
        one; :func:`monai_cnf.metrics.real_dims`); shape ``(B,)``.

        This default divides the joint ``log_prob`` of all of ``y`` (padding included) by the real count: for a
        flow, since ``p(y) <= p(y[mask])``, a conservative bound on the real pixels' bits/dim. A factored model
        overrides it with its exact masked sum."""
        from monai_cnf.metrics.likelihood import bits_per_dim, real_dims

        return bits_per_dim(self.log_prob(y, x, num_samples=num_samples), real_dims(y, mask))

    def sample(
        self,
        x: Tensor,
        num_samples: int = 4,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> Tensor:
        """``num_samples`` samples ``(S, B, C, *spatial)`` at ``temperature``, ``chunk_size`` per pass."""
        raise NotImplementedError(f"{type(self).__name__} has no sample.")

    def sample_chunks(
        self,
        x: Tensor,
        num_samples: int = 4,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[Tensor]:
        """:meth:`sample`'s samples as they are drawn, ``(k, B, C, *spatial)`` with ``k <= chunk_size``, so a caller
        can reduce them without holding all ``num_samples`` (:class:`~monai_cnf.engines.SampleInferer`).

        This default calls :meth:`sample` once per chunk; models whose condition costs a network pass override it
        to run that pass once for all chunks (the CNF's conditioner, the factored baseline's head).
        """
        self.check_sampling(num_samples, temperature, chunk_size)
        chunk = int(chunk_size or self.default_chunk_size)
        done = 0
        while done < int(num_samples):
            k = min(chunk, int(num_samples) - done)
            yield self.sample(x, num_samples=k, temperature=temperature, generator=generator, chunk_size=k)
            done += k

    def forward(self, x: Tensor) -> Tensor:
        """The deterministic prediction ``(B, C, *spatial)`` (MONAI's inferers call this)."""
        raise NotImplementedError(f"{type(self).__name__} has no forward.")

    def has_exact_moments(self, temperature: float = 1.0) -> bool:
        """Whether :meth:`exact_moments` knows the samples' moments at ``temperature`` (default: never)."""
        return False

    def exact_moments(self, x: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """``(E[y], E[y^2])`` of :meth:`sample` at ``temperature``, each ``(B, C, *spatial)``, in closed form
        (only where :meth:`has_exact_moments`)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form moments at temperature {temperature}.")

    @staticmethod
    def check_sampling(num_samples: int, temperature: float, chunk_size: int | None) -> None:
        """The argument checks every :meth:`sample` shares (a ``ValueError`` naming the argument)."""
        if int(num_samples) < 1:
            raise ValueError(f"`num_samples` must be >= 1, got {num_samples}.")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
        if float(temperature) < 0:
            raise ValueError(f"`temperature` must be >= 0, got {temperature}.")
