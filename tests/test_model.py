"""The gated wrapper: contracts with the HF model, routing, save/load."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_batch, tiny_model

from hadskip.checkpoint import load
from hadskip.core.model import GatedModel
from hadskip.errors import CheckpointError, ConfigError

ARCHS = ["bert", "roberta", "electra", "mpnet", "distilbert"]


@pytest.mark.parametrize("arch", ARCHS)
def test_all_gates_open_equals_unwrapped_model(arch):
    hf = tiny_model(arch)
    ids, mask = tiny_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        out = GatedModel(hf).eval()(ids, mask, open_gates=True)
    torch.testing.assert_close(out.logits, ref)
    assert out.gates.shape == (ids.shape[0], 4) and bool(out.gates.all())


@pytest.mark.parametrize("arch", ARCHS)
def test_closed_gate_is_the_identity(arch):
    model = GatedModel(tiny_model(arch)).eval()
    ids, mask = tiny_batch()
    forced = torch.ones(ids.shape[0], 4, dtype=torch.bool)
    forced[:, 2] = False
    with torch.no_grad():
        out = model(ids, mask, forced_gates=forced, record_hidden=True)
    hidden = out.trace.hidden
    torch.testing.assert_close(hidden[2], hidden[1], rtol=0, atol=0)
    assert not torch.allclose(hidden[1], hidden[0])
    with torch.no_grad():
        closed = model(ids, mask, forced_gates=torch.zeros_like(forced), record_hidden=True)
    torch.testing.assert_close(closed.trace.hidden[-1], closed.trace.embeddings, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_routing_equals_masked_computation_and_single_rows(arch):
    model = GatedModel(tiny_model(arch)).eval()
    ids, mask = tiny_batch(batch=6)
    g = torch.Generator().manual_seed(1)
    forced = torch.rand(6, 4, generator=g) > 0.5
    forced[0] = True  # one row runs everything, one skips everything
    forced[1] = False
    with torch.no_grad():
        routed = model(ids, mask, forced_gates=forced).logits
        masked = model(ids, mask, forced_gates=forced, route=False).logits
        single = torch.cat(
            [model(ids[i : i + 1], mask[i : i + 1], forced_gates=forced[i : i + 1]).logits for i in range(6)]
        )
    torch.testing.assert_close(routed, masked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(routed, single, rtol=1e-5, atol=1e-5)


def test_learned_routing_in_eval_matches_masked_and_threshold():
    model = GatedModel(tiny_model("bert"), init_run_bias=0.0).eval()
    for layer in model.gated_layers:  # make decisions depend on the input
        torch.nn.init.normal_(layer.gate.fc2.weight, std=3.0)
    ids, mask = tiny_batch(batch=8)
    with torch.no_grad():
        routed = model(ids, mask)
        masked = model(ids, mask, route=False)
        with_probs = model(ids, mask, return_probs=True)
    torch.testing.assert_close(routed.logits, masked.logits, rtol=1e-5, atol=1e-5)
    assert routed.probs is None  # the cheap decision computes no probabilities
    assert torch.equal(routed.gates, with_probs.gates) and torch.equal(routed.logits, with_probs.logits)
    assert torch.equal(with_probs.gates.bool(), with_probs.probs > 0.5)
    assert 0 < routed.gates.sum() < routed.gates.numel()
    with torch.no_grad():
        stricter = model(ids, mask, threshold=0.9)
    assert stricter.gates.sum() <= routed.gates.sum()


def test_training_forward_samples_gates_and_gradients_reach_gates_and_layers():
    model = GatedModel(tiny_model("bert")).train()
    ids, mask = tiny_batch()
    torch.manual_seed(0)
    out = model(ids, mask)
    assert set(out.gates.detach().unique().tolist()) <= {0.0, 1.0}
    out.logits.pow(2).sum().backward()
    layer = model.gated_layers[1]
    assert layer.gate.fc2.weight.grad is not None and layer.gate.fc2.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.base_layer.parameters())


def test_under_the_score_function_estimator_only_p_run_carries_the_gates_gradient():
    model = GatedModel(tiny_model("bert")).train()
    ids, mask = tiny_batch()
    torch.manual_seed(0)
    out = model(ids, mask, estimator="reinforce")
    assert set(out.gates.unique().tolist()) <= {0.0, 1.0} and not out.gates.requires_grad
    out.logits.pow(2).sum().backward()  # through the layers: nothing reaches a gate
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.gate_parameters())
    assert out.probs.requires_grad


def test_unwrap_gives_the_plain_model_back():
    hf = tiny_model("bert")
    originals = list(hf.bert.encoder.layer)
    ids, mask = tiny_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
    model = GatedModel(hf)
    plain = model.unwrap()
    assert list(plain.bert.encoder.layer) == originals
    assert all(type(layer).__name__ == "BertLayer" for layer in plain.bert.encoder.layer)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids, attention_mask=mask).logits, ref)


def test_attention_maps_are_recorded_with_eager_attention_only():
    model = GatedModel(tiny_model("bert")).eval()
    ids, mask = tiny_batch()
    model.set_attn_implementation("sdpa")
    with pytest.raises(ConfigError, match="eager"), torch.no_grad():
        model(ids, mask, open_gates=True, record_attn=True)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(ids, mask, open_gates=True, record_attn=True, record_hidden=True)
    assert len(out.trace.attentions) == 4
    att = out.trace.attentions[0]
    assert att.shape == (ids.shape[0], ids.shape[1], ids.shape[1])
    torch.testing.assert_close(att.sum(-1), torch.ones_like(att.sum(-1)))  # rows of probabilities


def test_unknown_model_type_is_a_clear_error():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    hf = GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100))
    with pytest.raises(ConfigError, match="unknown model type 'gpt2'; supported: .*bert"):
        GatedModel(hf)


def test_save_load_round_trip_and_predict_on_raw_text(tmp_path):
    from conftest import build_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    tok = build_tokenizer(tmp_path / "tokenizer")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
    )
    model = GatedModel(BertForSequenceClassification(cfg), gate_hidden_size=16).eval()
    for layer in model.gated_layers:
        torch.nn.init.normal_(layer.gate.fc2.weight, std=3.0)
    model.threshold = 0.37
    model.save_pretrained(tmp_path / "ckpt", tokenizer=tok, metadata={"budget": 1.5})
    loaded = load(tmp_path / "ckpt")
    assert loaded.threshold == pytest.approx(0.37) and loaded.metadata == {"budget": 1.5}
    enc = tok(["a short one", "the cat sat on the mat today"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        b = loaded(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    torch.testing.assert_close(a.logits, b.logits)
    assert torch.equal(a.gates, b.gates)
    pred = loaded.predict(["a short one", "the cat sat on the mat today"])
    assert pred["prediction"] == a.logits.argmax(-1).tolist()
    assert [len(x) for x in pred["layers"]] == a.gates.sum(1).int().tolist()
    # the saved model is a plain HF checkpoint too
    from transformers import AutoModelForSequenceClassification

    assert (
        type(AutoModelForSequenceClassification.from_pretrained(tmp_path / "ckpt")).__name__
        == "BertForSequenceClassification"
    )


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    model = GatedModel(tiny_model("bert"))
    model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "gates.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupted or incomplete"):
        load(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "gates.safetensors").unlink()
    with pytest.raises(CheckpointError, match="gates.safetensors is missing"):
        load(tmp_path / "ckpt")


def test_mean_pooled_gates_ignore_padding_and_survive_save_load(tmp_path):
    model = GatedModel(tiny_model("bert"), gate_pooling="mean").eval()
    for layer in model.gated_layers:
        torch.nn.init.normal_(layer.gate.fc2.weight, std=3.0)
    ids, mask = tiny_batch(batch=4)
    padded_ids = torch.cat([ids, torch.full((4, 5), 7)], dim=1)  # extra padding with junk tokens
    padded_mask = torch.cat([mask, torch.zeros(4, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a = model(ids, mask, return_probs=True)
        b = model(padded_ids, padded_mask, return_probs=True)
        fast_a, fast_b = model(ids, mask), model(padded_ids, padded_mask)
    torch.testing.assert_close(a.probs, b.probs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-4, atol=1e-5)
    # the cheap decision's one-kernel masked mean ignores the padding too, and decides the same
    assert torch.equal(fast_a.gates, a.gates) and torch.equal(fast_b.gates, a.gates)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load(tmp_path / "ckpt")
    assert loaded.gate_pooling == "mean"
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, return_probs=True).probs, a.probs)
    with pytest.raises(ConfigError, match="gate pooling 'max' is not one of first, mean"):
        GatedModel(tiny_model("bert"), gate_pooling="max")


@pytest.mark.parametrize("arch", ARCHS)
def test_head_logits_of_the_last_states_are_the_models_own_logits(arch):
    from hadskip.core.arch import architecture_for, head_logits

    hf = tiny_model(arch)
    ids, mask = tiny_batch()
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        logits = head_logits(hf, architecture_for(hf), out.hidden_states[-1])
    torch.testing.assert_close(logits, out.logits)


def test_uncertainty_gates_run_the_unsure_rows_and_survive_save_load(tmp_path):
    from hadskip.core.arch import head_logits
    from hadskip.core.gates import uncertainty

    model = GatedModel(tiny_model("bert"), uncertainty_weight=8.0).eval()
    for layer in model.gated_layers:  # gates that read only the head's uncertainty
        torch.nn.init.zeros_(layer.gate.fc2.weight)
    ids, mask = tiny_batch(batch=16, seed=3)
    with torch.no_grad():
        fast = model(ids, mask, threshold=0.5)
        slow = model(ids, mask, threshold=0.5, return_probs=True, record_hidden=True)
        u1 = uncertainty(head_logits(model.model, model.arch, slow.trace.hidden[0]))
    assert torch.equal(fast.gates, slow.gates)
    # the second gate's p(run) rises with the head's uncertainty on its input state, row by row (the first
    # gate's input is the embeddings, whose first token is the same [CLS] vector for every row)
    order = u1.argsort()
    assert bool((slow.probs[order, 1].diff() >= -1e-6).all()) and slow.probs[:, 1].std() > 0
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load(tmp_path / "ckpt")
    assert loaded.gate_uncertainty and float(loaded.gated_layers[0].gate.uncertainty_weight) == 8.0
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, threshold=0.5, return_probs=True).probs, slow.probs)


def test_uncertainty_gates_send_no_gradient_into_the_head_or_the_encoder():
    model = GatedModel(tiny_model("bert"), uncertainty_weight=2.0).train()
    ids, mask = tiny_batch()
    out = model(ids, mask, detach_gate_input=True)
    out.probs.sum().backward()  # only what the gates read
    gate_grads = [p.grad for p in model.gate_parameters()]
    assert all(g is not None for g in gate_grads)
    assert all(p.grad is None or not p.grad.any() for p in model.backbone_parameters())
