"""Conditioners g(x): networks that map the conditioning image to one feature map per flow level.

``conds[l]`` has the spatial size of flow level ``l + 1``: the target's size divided by ``2**(l + 1)``.
Every conditioner exposes ``out_channels`` (one channel count per level). The coupling/prior subnet factory
(:mod:`~monai_cnf.networks.conditioners.subnets`) is re-exported here too.
"""

from __future__ import annotations

from monai_cnf.networks.conditioners.rrdb import RRDB, ResidualDenseBlock, RRDBConditioner
from monai_cnf.networks.conditioners.subnets import (
    ConvSubnet,
    SubnetFactory,
    conv_subnet_factory,
    get_conv_type,
    zero_init_,
)
from monai_cnf.networks.conditioners.unet import UNetConditioner
from monai_cnf.networks.conditioners.vgg import VGGConditioner

__all__ = [
    "RRDB",
    "ConvSubnet",
    "RRDBConditioner",
    "ResidualDenseBlock",
    "SubnetFactory",
    "UNetConditioner",
    "VGGConditioner",
    "conv_subnet_factory",
    "get_conv_type",
    "zero_init_",
]
