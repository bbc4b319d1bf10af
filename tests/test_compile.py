"""``torch.compile`` traces every model's forward pass and loss in one graph: no graph break comes from the
library's own branches (value checks, the CPU kernels' switch, the conditioning)."""

import pytest
import torch
import torch._dynamo

from pixelmodels import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_the_training_loss_traces_without_a_graph_break(name):
    model = create_model(name, image_shape=(3, 6, 6), n_bits=3, n_classes=3, preset="tiny").train()
    x, y = torch.randint(0, 8, (2, 3, 6, 6)), torch.tensor([0, 2])
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda x, y: model.bits_per_dim(x, y).mean())(x, y)
    reasons = [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1 and explained.graph_break_count == 0, reasons
    # the check works: a value read into Python before the model runs breaks the graph
    explained = torch._dynamo.explain(lambda x, y: model.bits_per_dim(x * int(y.max().item() > -1), y).mean())(x, y)
    assert explained.graph_break_count >= 1


@pytest.mark.parametrize("cond_shape,cond_codes", [((4,), None), ((2, 3, 3), None), ((3, 3), 5)])
def test_conditions_trace_without_a_graph_break(cond_shape, cond_codes):
    model = create_model("gated-pixelcnn", image_shape=(1, 6, 6), n_codes=7, cond_shape=cond_shape,
                         cond_codes=cond_codes, preset="tiny").train()
    x = torch.randint(0, 7, (2, 1, 6, 6))
    cond = torch.randint(0, 5, (2, *cond_shape)) if cond_codes else torch.randn(2, *cond_shape)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda x, c: model.bits_per_dim(x, cond=c).mean())(x, cond)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, [str(r.reason)
                                                                             for r in explained.break_reasons]
