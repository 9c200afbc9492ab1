"""stvg-edge: spatio-temporal video grounding (STVG-R1) for edge GPUs.

Data flows one way: frames -> tracks -> prompted frames -> answer -> tube.
The runtime package never imports ``train`` or ``export``.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
