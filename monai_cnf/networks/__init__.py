"""Networks: conditional normalizing flows, factored baselines, dequantizers, conditioners and flow layers.

``monai_cnf.networks.flows`` holds the invertible layers and :class:`~monai_cnf.networks.flows.ConditionalGlow`;
``monai_cnf.networks.conditioners`` the feature extractors g(x).
"""

from __future__ import annotations

from monai_cnf.networks import conditioners, flows
from monai_cnf.networks.cnf import ConditionalNormalizingFlow
from monai_cnf.networks.conditioners import RRDBConditioner, UNetConditioner, VGGConditioner
from monai_cnf.networks.dequantizers import BinaryDequantizer, UniformDequantizer
from monai_cnf.networks.factored import FactoredBaseline

__all__ = [
    "BinaryDequantizer",
    "ConditionalNormalizingFlow",
    "FactoredBaseline",
    "RRDBConditioner",
    "UNetConditioner",
    "UniformDequantizer",
    "VGGConditioner",
    "conditioners",
    "flows",
]
