"""Architecture and initialisation mitigations: each sets one knob of the task's config."""

from __future__ import annotations

from dataclasses import dataclass

from vanex.engine.mitigation import KnobMitigation
from vanex.registry import MITIGATIONS


@MITIGATIONS.register("relu")
@dataclass
class ReLU(KnobMitigation):
    """ReLU (Nair & Hinton 2010; Glorot, Bordes & Bengio 2011): derivative 1 where active."""

    knob, value = "activation", "relu"


@MITIGATIONS.register("leaky_relu")
@dataclass
class LeakyReLU(KnobMitigation):
    """Leaky ReLU, slope 0.01 (Maas, Hannun & Ng 2013): no unit is ever exactly dead."""

    knob, value = "activation", "leaky_relu"


@MITIGATIONS.register("gelu")
@dataclass
class GELU(KnobMitigation):
    """GELU (Hendrycks & Gimpel 2016): smooth ReLU used by BERT and GPT."""

    knob, value = "activation", "gelu"


@MITIGATIONS.register("silu")
@dataclass
class SiLU(KnobMitigation):
    """SiLU / Swish (Elfwing et al. 2018; Ramachandran et al. 2017)."""

    knob, value = "activation", "silu"


@MITIGATIONS.register("tanh")
@dataclass
class Tanh(KnobMitigation):
    """tanh (LeCun et al. 1998, Efficient BackProp): zero-centred, |tanh'| <= 1 instead of 1/4."""

    knob, value = "activation", "tanh"


@MITIGATIONS.register("xavier_init")
@dataclass
class XavierInit(KnobMitigation):
    """Xavier/Glorot normal init, Var(W) = 2/(fan_in+fan_out) (Glorot & Bengio 2010)."""

    knob, value = "init", "xavier"


@MITIGATIONS.register("he_init")
@dataclass
class HeInit(KnobMitigation):
    """He/Kaiming normal init, Var(W) = 2/fan_in, for ReLU nets (He et al. 2015)."""

    knob, value = "init", "he"


@MITIGATIONS.register("orthogonal_init")
@dataclass
class OrthogonalInit(KnobMitigation):
    """Orthogonal weight matrices, all singular values 1 (Saxe, McClelland & Ganguli 2014)."""

    knob, value = "init", "orthogonal"


@MITIGATIONS.register("small_init")
@dataclass
class SmallInit(KnobMitigation):
    """Normal init with fixed std 0.02, as in GPT-2 (Radford et al. 2019)."""

    knob, value = "init", "small"


@MITIGATIONS.register("batchnorm")
@dataclass
class BatchNorm(KnobMitigation):
    """Batch normalisation before each nonlinearity (Ioffe & Szegedy 2015)."""

    knob, value = "norm", "batchnorm"


@MITIGATIONS.register("layernorm")
@dataclass
class LayerNorm(KnobMitigation):
    """Layer normalisation before each nonlinearity (Ba, Kiros & Hinton 2016)."""

    knob, value = "norm", "layernorm"


@MITIGATIONS.register("residual")
@dataclass
class Residual(KnobMitigation):
    """Identity skip connection around each hidden block (He et al. 2016)."""

    knob, value = "residual", "identity"
