"""`from bitjax.layers import BitLinear, RMSNorm`: the layers' public name since the first release.

They live in bitjax.nn.layers; this module keeps the import path researchers use working.
"""

from bitjax.nn.layers import BitLinear, Linear, QuantStrength, RMSNorm, ternarize_once

__all__ = ["BitLinear", "Linear", "QuantStrength", "RMSNorm", "ternarize_once"]
