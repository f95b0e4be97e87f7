"""Small MONAI 3-D U-Nets for CPU inference (a few hundred thousand parameters)."""
from __future__ import annotations

import torch
from monai.networks.nets import UNet


def small_unet(in_channels: int = 1, out_channels: int = 1, channels=(8, 16, 32, 64)) -> torch.nn.Module:
    """3-D U-Net, strides 2 (input sides must be multiples of 8), one residual unit per level."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=1, norm="instance")


def fpr_cnn(channels=(8, 16, 32, 64)) -> torch.nn.Module:
    """Candidate classifier for 32^3 patches: MONAI conv blocks (conv-BN-PReLU) with 2x max
    pooling after each level, global average pooling, one logit ("nodule")."""
    from monai.networks.blocks import Convolution

    layers: list[torch.nn.Module] = []
    c_in = 1
    for k, c in enumerate(channels):
        layers.append(Convolution(3, c_in, c, kernel_size=3, norm="batch", act="prelu"))
        if k >= 2:
            layers.append(Convolution(3, c, c, kernel_size=3, norm="batch", act="prelu"))
        layers.append(torch.nn.MaxPool3d(2))
        c_in = c
    layers += [torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(c_in, 1)]
    return torch.nn.Sequential(*layers)


class MeanLogit(torch.nn.Module):
    """Several classifiers as one network: the mean of their logits (an ensemble exported
    as one ONNX graph, so the runtime pipeline and its card are unchanged)."""

    def __init__(self, nets: list[torch.nn.Module]) -> None:
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([n(x) for n in self.nets], 0).mean(0)


def fpr_cnn_from_onnx(path) -> torch.nn.Module:
    """An :func:`fpr_cnn` carrying the weights of an exported classifier (``model.onnx`` of a
    served version, whose training checkpoint may be gone).  The export folds each batch
    norm into its convolution, so the convolutions take the folded weights and every batch
    norm becomes the identity (its statistics are not learnt again: fine-tune with
    :func:`freeze_batch_norm`).  Tested for output parity with ONNX Runtime."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    init = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in g.initializer}
    for n in g.node:  # the exporter shares equal initialisers through Identity nodes
        if n.op_type == "Identity" and n.input[0] in init:
            init[n.output[0]] = init[n.input[0]]
    convs = [n for n in g.node if n.op_type == "Conv"]
    prelus = [n for n in g.node if n.op_type == "PRelu"]
    net = fpr_cnn()
    blocks = [m for m in net if hasattr(m, "conv")]
    if len(convs) != len(blocks) or len(prelus) != len(blocks):
        raise ValueError(f"{path}: not an fpr_cnn export ({len(convs)} convolutions, {len(prelus)} PReLUs)")
    with torch.no_grad():
        for b, c, p in zip(blocks, convs, prelus):
            b.conv.weight.copy_(init[c.input[1]])
            b.conv.bias.copy_(init[c.input[2]])
            bn = b.adn.N
            bn.weight.fill_(1.0)
            bn.bias.zero_()
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) = x
            b.adn.A.weight.copy_(init[p.input[1]].reshape(-1))
        lin = net[-1]
        gemm = next(n for n in g.node if n.op_type in ("Gemm", "MatMul"))
        names = [i for i in gemm.input if i in init]
        lin.weight.copy_(init[names[0]].reshape(lin.weight.shape))
        lin.bias.copy_(init[names[1]].reshape(lin.bias.shape))
    return net.eval()


def freeze_batch_norm(net: torch.nn.Module) -> None:
    """Keep every batch norm in inference mode (fixed statistics) while the rest trains."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def weight_average(nets: list[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The uniform average of the networks' state dicts (a "model soup" of fine-tunes that
    share an initialisation; integer buffers such as batch counters are taken from the first)."""
    sds = [n.state_dict() for n in nets]
    if any(list(sd) != list(sds[0]) for sd in sds):
        raise ValueError("the networks do not have the same parameters")
    return {k: ((sum(sd[k].double() for sd in sds) / len(sds)).to(v.dtype) if v.is_floating_point() else v)
            for k, v in sds[0].items()}
