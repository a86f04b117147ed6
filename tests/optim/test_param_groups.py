"""Named optimizer groups split by weight decay: biases, norm weights (1-D tensors) and the listed
tokens go to ``<name>_no_decay`` with weight_decay 0; frozen parameters are left out; the other keys
of a group (lr, ...) are kept."""

import torch
from torch import nn

from solo_ext.optim.factory import build_param_groups, split_weight_decay


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.frozen = nn.Parameter(torch.zeros(4, 4), requires_grad=False)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


def ids(params):
    return [id(p) for p in params]


def _groups(module, **extra):
    return [{"name": "backbone", "named_params": list(module.named_parameters(prefix="blocks.0")), **extra}]


def test_decay_split_by_dimension_and_token_name():
    encoder = Encoder()
    groups = split_weight_decay(_groups(encoder, lr=0.5), {"cls_token"})
    assert [group["name"] for group in groups] == ["backbone", "backbone_no_decay"]
    decay, no_decay = groups
    assert ids(decay["params"]) == ids([encoder.proj.weight])
    exempt = [encoder.cls_token, encoder.proj.bias, encoder.norm.weight, encoder.norm.bias]
    assert ids(no_decay["params"]) == ids(exempt)
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert decay["lr"] == no_decay["lr"] == 0.5
    assert set(decay) == {"name", "params", "lr"}
    assert set(no_decay) == {"name", "params", "lr", "weight_decay"}


def test_tokens_not_listed_are_decayed():
    encoder = Encoder()
    decay, no_decay = split_weight_decay(_groups(encoder), set())
    assert ids(decay["params"]) == ids([encoder.cls_token, encoder.proj.weight])
    assert id(encoder.cls_token) not in ids(no_decay["params"])


def test_without_the_split_only_frozen_parameters_are_left_out():
    encoder = Encoder()
    [group] = build_param_groups(_groups(encoder, lr=0.1), False, {"cls_token"})
    assert ids(group["params"]) == ids(p for p in encoder.parameters() if p.requires_grad)
    assert set(group) == {"name", "params", "lr"}
    decay, _ = build_param_groups(_groups(encoder), True, {"cls_token"})
    assert ids(decay["params"]) == ids([encoder.proj.weight])
