"""The Emu3 LM against BAAI's reference outputs (tests/fixtures/baai-tiny), every backend, after from_pretrained."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import emu3_hf
from emu3_hf import Emu3LMConfig, Emu3LMForCausalLM, Emu3LMModel
from emu3_hf.modeling.transformers_compat import OUTPUT_CACHE_FIELD, enable_activation_checkpointing

BATCHES = ["batch0", "batch1", "batch2"]
CPU_BACKENDS = ["eager", "sdpa"]


def _attended(ref, batch: str) -> torch.Tensor:
    mask = ref.get(f"lm.{batch}.attention_mask")
    ids = ref[f"lm.{batch}.input_ids"]
    return mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)


@pytest.fixture(scope="module", params=CPU_BACKENDS)
def lm(request, lm_dir):
    model = Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation=request.param).eval()
    return model


@pytest.mark.parametrize("batch", BATCHES)
def test_logits_and_hidden_states_match_baai(lm, ref, batch):
    ids = ref[f"lm.{batch}.input_ids"]
    with torch.no_grad():
        out = lm(ids, attention_mask=ref.get(f"lm.{batch}.attention_mask"), output_hidden_states=True)
    keep = _attended(ref, batch)
    torch.testing.assert_close(out.logits[keep], ref[f"lm.{batch}.logits"][keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out.hidden_states[-1][keep], ref[f"lm.{batch}.last_hidden_state"][keep], atol=1e-5, rtol=1e-5
    )


def test_hidden_states_tuple_is_baai_layout(lm, ref):
    with torch.no_grad():
        out = lm(ref["lm.batch0.input_ids"], output_hidden_states=True)
    stacked = torch.stack(out.hidden_states)  # (num_layers + 1, B, L, D)
    torch.testing.assert_close(stacked, ref["lm.batch0.hidden_states"], atol=1e-5, rtol=1e-5)


def test_mask_derived_positions_give_same_logits(lm, ref):
    keep = _attended(ref, "batch1")
    with torch.no_grad():
        out = lm(
            ref["lm.batch1.input_ids"],
            attention_mask=ref["lm.batch1.attention_mask"],
            position_ids=ref["lm.batch1.position_ids_from_mask"],
        )
    torch.testing.assert_close(out.logits[keep], ref["lm.batch1.logits"][keep], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("gen", ["gen0", "gen1"])
def test_greedy_generate_matches_baai(lm, ref, gen, cache):
    with torch.no_grad():
        out = lm.generate(
            ref[f"lm.{gen}.input_ids"],
            attention_mask=ref.get(f"lm.{gen}.attention_mask"),
            max_new_tokens=20,
            do_sample=False,
            cache_implementation=cache,
        )
    assert torch.equal(out, ref[f"lm.{gen}.output_ids"])


def test_incremental_decoding_equals_full_forward(lm, ref):
    """Prefill 8 tokens, then feed the rest one by one through the cache: logits equal one full forward."""
    ids = ref["lm.batch0.input_ids"]
    with torch.no_grad():
        full = lm(ids).logits
        out = lm(ids[:, :8], use_cache=True)
        steps, cache = [out.logits], getattr(out, OUTPUT_CACHE_FIELD)  # the installed release's names
        for t in range(8, ids.shape[1]):
            out = lm(ids[:, t : t + 1], use_cache=True, **{OUTPUT_CACHE_FIELD: cache})
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_backends_agree_after_from_pretrained(lm_dir, ref):
    """The meta-device RoPE trap shows up as sdpa != eager by ~1e-3 on a fresh load; guard both directions."""
    models = {b: Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation=b).eval() for b in CPU_BACKENDS}
    ids, mask = ref["lm.batch1.input_ids"], ref["lm.batch1.attention_mask"]
    keep = mask.bool()
    with torch.no_grad():
        logits = {b: m(ids, attention_mask=mask).logits for b, m in models.items()}
    torch.testing.assert_close(logits["eager"][keep], logits["sdpa"][keep], atol=1e-5, rtol=1e-5)
    rope = models["sdpa"].model.rotary_emb
    head_dim = models["sdpa"].config.head_dim
    expected = 1.0 / (1e6 ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    torch.testing.assert_close(rope.inv_freq, expected)


def test_loss_is_shifted_cross_entropy(lm, ref):
    ids = ref["lm.batch0.input_ids"]
    with torch.no_grad():
        out = lm(ids, labels=ids)
    expected = F.cross_entropy(ref["lm.batch0.logits"][0, :-1], ids[0, 1:])
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)


def test_linear_rope_scaling_divides_positions(lm_dir, ref):
    """BAAI's linear RoPE scaling divides positions by the factor: check against float positions p / f."""
    base = Emu3LMForCausalLM.from_pretrained(lm_dir).eval()
    scaled = Emu3LMForCausalLM.from_pretrained(lm_dir, rope_scaling={"type": "linear", "factor": 2.0}).eval()
    ids = ref["lm.batch0.input_ids"]
    positions = torch.arange(ids.shape[1], dtype=torch.float32)[None] / 2.0
    with torch.no_grad():
        torch.testing.assert_close(scaled(ids).logits, base(ids, position_ids=positions).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "rope_scaling",
    [{"type": "linear", "factor": 2}, {"type": "yarn", "factor": 2.0}, {"type": "linear"}, {"factor": 2.0}],
)
def test_rope_scaling_is_validated_like_baai(rope_scaling):
    with pytest.raises(ValueError, match="rope_scaling"):
        Emu3LMConfig(rope_scaling=rope_scaling)


def test_config_defaults_are_baai_8b():
    config = Emu3LMConfig()
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (184622, 4096, 14336)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (32, 32, 8)
    assert config.rope_parameters["rope_theta"] == 1e6 and config.max_position_embeddings == 9216
    # first visual id = eoi + 1; codebook = vocab - first visual id (BAAI's vocabulary layout)
    assert (config.visual_token_offset, config.codebook_size) == (151854, 32768)
    ids = (config.bos_token_id, config.eos_token_id, config.pad_token_id, config.img_token_id)
    assert ids == (151849, 151850, 151643, 151851)
    assert (config.boi_token_id, config.eoi_token_id, config.eol_token_id, config.eof_token_id) == (
        151852,
        151853,
        151846,
        151847,
    )


def test_config_rejects_a_visual_block_outside_the_vocabulary():
    with pytest.raises(ValueError, match="visual token block"):
        Emu3LMConfig(vocab_size=1000, eoi_token_id=10, codebook_size=2000)


@pytest.mark.parametrize("checkpoint_kwargs", [None, {"use_reentrant": False}])
def test_gradient_checkpointing_gives_the_same_gradients(lm_dir, ref, checkpoint_kwargs):
    ids = ref["lm.batch0.input_ids"]
    grads = []
    for checkpointing in (False, True):
        model = Emu3LMForCausalLM.from_pretrained(lm_dir, attention_dropout=0.0)
        if checkpointing:
            enable_activation_checkpointing(model, checkpoint_kwargs)
            assert model.model.layers[0].gradient_checkpointing  # really on: the comparison is not vacuous
        model.train()
        model(ids, labels=ids).loss.backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 0.25), (torch.float16, 0.05)])
def test_half_precision_forward_tracks_float32(lm_dir, ref, dtype, tol):
    model = Emu3LMForCausalLM.from_pretrained(lm_dir, dtype=dtype).eval()
    assert model.lm_head.weight.dtype == dtype
    mask = ref["lm.batch1.attention_mask"]
    with torch.no_grad():
        logits = model(ref["lm.batch1.input_ids"], attention_mask=mask).logits.float()
    keep = mask.bool()
    assert torch.isfinite(logits[keep]).all()
    assert (logits[keep] - ref["lm.batch1.logits"][keep]).abs().max() < tol


def test_device_map_auto_loads(lm_dir, ref):
    model = Emu3LMForCausalLM.from_pretrained(lm_dir, device_map="auto").eval()
    assert "Emu3DecoderLayer" in model._no_split_modules
    with torch.no_grad():
        logits = model(ref["lm.batch0.input_ids"].to(model.device)).logits.cpu()
    torch.testing.assert_close(logits, ref["lm.batch0.logits"], atol=1e-5, rtol=1e-5)


def test_save_and_reload_round_trip(lm, tmp_path, ref):
    lm.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ref["lm.batch2.input_ids"]).logits, lm(ref["lm.batch2.input_ids"]).logits)


# --- Auto classes: BAAI folders resolve to our classes, transformers' "emu3" keeps its own -------------------


@pytest.mark.parametrize("with_remote_files", [False, True])
def test_baai_folder_loads_through_auto_classes_without_remote_code(lm_dir, tmp_path, with_remote_files):
    folder = tmp_path / "Emu3-Gen"
    shutil.copytree(lm_dir, folder)
    if with_remote_files:
        # BAAI's code files beside the config; they must never run.
        for name in ("configuration_emu3.py", "modeling_emu3.py"):
            (folder / name).write_text("raise RuntimeError('remote code must not run')\n")
    assert type(AutoConfig.from_pretrained(folder)) is Emu3LMConfig
    assert type(AutoModelForCausalLM.from_pretrained(folder)) is Emu3LMForCausalLM
    assert type(AutoModel.from_pretrained(folder)) is Emu3LMModel


def test_transformers_native_emu3_still_resolves_to_transformers(fixtures_dir):
    from transformers import Emu3Config, Emu3ForConditionalGeneration

    assert type(AutoConfig.from_pretrained(fixtures_dir / "hf-native")) is Emu3Config
    assert Emu3LMConfig.__name__ not in {"Emu3Config", "Emu3TextConfig"}
    assert "Emu3LMForCausalLM" in dir(emu3_hf)
    model = Emu3ForConditionalGeneration.from_pretrained(fixtures_dir / "hf-native")
    assert type(model).__module__.startswith("transformers.")


@pytest.mark.parametrize("batch", BATCHES)
def test_native_layout_gives_the_same_logits_as_ours(fixtures_dir, lm_dir, ref, batch):
    from transformers import Emu3ForConditionalGeneration

    native = Emu3ForConditionalGeneration.from_pretrained(fixtures_dir / "hf-native", attn_implementation="eager")
    ours = Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation="eager")
    ids, mask = ref[f"lm.{batch}.input_ids"], ref.get(f"lm.{batch}.attention_mask")
    keep = _attended(ref, batch)
    with torch.no_grad():
        a = native.eval()(input_ids=ids, attention_mask=mask).logits
        b = ours.eval()(ids, attention_mask=mask).logits
    torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-5)


# --- masked attention over grouped KV heads -----------------------------------------------------------------------


def _grouped_case(length: int, boolean: bool, seed: int = 0):
    """Queries (2, 8 heads, L), keys/values (2, 2 KV heads, 9) and a left-padding + causal mask over a cache whose
    last slots are empty (a static cache), in transformers' boolean form (True = attend) or additive."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, h, n, 16, generator=g) for h, n in ((8, length), (2, 9), (2, 9)))
    slots, first = torch.arange(9), 7 - length  # the L queries are the tokens in slots first .. first + L - 1
    allowed = slots[None, None, :] <= torch.arange(first, first + length)[None, :, None]  # (1, L, 9) causal
    allowed = (allowed & (slots >= torch.tensor([0, 2])[:, None, None])).unsqueeze(1)  # (2, 1, L, 9) row 1 padded
    if boolean:
        return q, k, v, allowed
    return q, k, v, torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


@pytest.mark.parametrize("length", [1, 4])
@pytest.mark.parametrize("boolean", [True, False])
def test_grouped_sdpa_equals_transformers_sdpa_and_eager(length, boolean):
    """Folding the query heads of a KV group into the query length is exact: the same outputs as transformers' own
    sdpa backend (which repeats K/V per head) and as plain softmax attention."""
    from emu3_hf.modeling.modeling_emu3 import eager_attention, grouped_sdpa_attention
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.training = 4, True, False
    q, k, v, mask = _grouped_case(length, boolean)
    ours, weights = grouped_sdpa_attention(module, q, k, v, mask, scaling=0.25)
    theirs, _ = ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k, v, mask, scaling=0.25)
    additive = mask if not boolean else torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    plain, _ = eager_attention(module, q, k, v, additive, scaling=0.25)
    assert weights is None and ours.shape == (2, length, 8, 16)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours, plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grouped_sdpa_attention(module, q, k, v, mask[..., :1, :], scaling=0.25)[0][:, -1:],
                               ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k, v, mask[..., :1, :], scaling=0.25)[0][:, -1:])


def test_sdpa_decoding_never_repeats_the_cache_per_head(lm_dir, ref):
    """A decode window with a mask (CFG's padded prompts, a static cache's empty slots) attends over the cached keys
    as they are: no tensor of the repeated (B, H, S, hd) shape is built, and its logits equal a full forward's.
    (transformers' own sdpa backend repeats them per head here; under torch.compile even for single tokens.)"""
    from torch.utils._python_dispatch import TorchDispatchMode

    model = Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation="sdpa").eval()
    config = model.config
    assert config.num_attention_heads > config.num_key_value_heads  # the fixture has grouped KV heads
    ids, mask = ref["lm.batch1.input_ids"], ref["lm.batch1.attention_mask"]
    head_dim = config.hidden_size // config.num_attention_heads
    repeated = (ids.shape[0], config.num_attention_heads, ids.shape[1], head_dim)  # K/V of S slots, once per head

    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                self.seen.add(tuple(out.shape))
            return out

    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits[:, -2:]
        prefix = model(ids[:, :-2], attention_mask=mask[:, :-2], use_cache=True)
        with Shapes() as shapes:  # a window of two tokens, as the Jacobi decoder feeds them
            step = model(ids[:, -2:], attention_mask=mask, cache=getattr(prefix, OUTPUT_CACHE_FIELD), use_cache=True)
    assert repeated not in shapes.seen
    torch.testing.assert_close(step.logits, full, atol=1e-5, rtol=1e-5)


# --- GPU backends (run on a CUDA machine; skipped elsewhere) -------------------------------------------------


def _gpu_backends() -> list[str]:
    backends = ["sdpa", "flex_attention"]
    try:
        import flash_attn  # noqa: F401

        backends.append("flash_attention_2")
    except ImportError:
        pass
    return backends


@pytest.mark.gpu
@pytest.mark.parametrize("backend", _gpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_backends_match_eager(lm_dir, ref, backend, dtype):
    if backend == "flash_attention_2" and dtype == torch.float32:
        pytest.skip("flash-attn runs in half precision only")
    eager = Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation="eager", dtype=dtype).cuda().eval()
    other = Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation=backend, dtype=dtype).cuda().eval()
    ids, mask = ref["lm.batch1.input_ids"].cuda(), ref["lm.batch1.attention_mask"].cuda()
    keep = mask.bool()
    with torch.no_grad():
        a = eager(ids, attention_mask=mask).logits.float()
        b = other(ids, attention_mask=mask).logits.float()
    tol = 1e-4 if dtype == torch.float32 else 6e-2
    torch.testing.assert_close(a[keep], b[keep], atol=tol, rtol=tol)
    if dtype == torch.float32:
        torch.testing.assert_close(a[keep].cpu(), ref["lm.batch1.logits"][keep.cpu()], atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_gpu_greedy_generate_matches_baai(lm_dir, ref, cache):
    model = Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation="sdpa").cuda().eval()
    with torch.no_grad():
        out = model.generate(
            ref["lm.gen1.input_ids"].cuda(),
            attention_mask=ref["lm.gen1.attention_mask"].cuda(),
            max_new_tokens=20,
            do_sample=False,
            cache_implementation=cache,
        )
    assert torch.equal(out.cpu(), ref["lm.gen1.output_ids"])


@pytest.mark.slow
def test_flex_attention_forward_on_cpu_matches_baai(lm_dir, ref):
    """flex_attention compiles its kernel (~20 s a shape on 2 cores): forward only, marked slow."""
    model = Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation="flex_attention").eval()
    keep = _attended(ref, "batch1")
    with torch.no_grad():
        out = model(ref["lm.batch1.input_ids"], attention_mask=ref["lm.batch1.attention_mask"])
    torch.testing.assert_close(out.logits[keep], ref["lm.batch1.logits"][keep], atol=1e-5, rtol=1e-5)
