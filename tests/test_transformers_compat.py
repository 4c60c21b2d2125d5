"""The LM against the transformers release installed today (and, in `make test-oldest`, the oldest one declared).

transformers 5.24 renamed the cache argument (`past_key_values` -> `cache`) and our `generate` went silently wrong:
every step after the first ran on a fresh cache. These tests cannot pass with that bug, and they pin the behaviour
of the few transformers internals the LM still uses (Llama's RMSNorm, MLP and rotary embedding) against independent
formulas, so an upstream change shows up here first.
"""

import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from emu3_hf import Emu3LMForCausalLM
from emu3_hf.modeling.transformers_compat import OUTPUT_CACHE_FIELD

BACKENDS = ["eager", "sdpa"]


@pytest.fixture(scope="module", params=BACKENDS)
def lm(request, lm_dir):
    return Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation=request.param).eval()


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("gen", ["gen0", "gen1"])
def test_generate_step_logits_equal_one_full_forward(lm, ref, gen, cache):
    """Every logit row `generate` produced from its cache equals the full forward of the final sequence."""
    ids, mask = ref[f"lm.{gen}.input_ids"], ref.get(f"lm.{gen}.attention_mask")
    with torch.no_grad():
        out = lm.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, cache_implementation=cache,
                          return_dict_in_generate=True, output_logits=True)
        full_mask = None if mask is None else torch.cat([mask, mask.new_ones(ids.shape[0], 12)], dim=1)
        positions = None if full_mask is None else (full_mask.cumsum(-1) - 1).clamp_min(0)
        full = lm(out.sequences, attention_mask=full_mask, position_ids=positions).logits  # (B, L + 12, V)
    steps = torch.stack(out.logits, dim=1)  # (B, 12, V): the logits that chose each new token
    torch.testing.assert_close(steps, full[:, ids.shape[1] - 1 : -1], atol=2e-5, rtol=2e-5)
    assert torch.equal(out.sequences, ref[f"lm.{gen}.output_ids"][:, : ids.shape[1] + 12])


SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)


def _tiny_pair():
    """Our LM and transformers' Llama at the same tiny size: the peer whose conventions ours must follow."""
    from emu3_hf import Emu3LMConfig

    ours = Emu3LMForCausalLM(Emu3LMConfig(**SMALL, pad_token_id=0, bos_token_id=1, eos_token_id=2, img_token_id=3,
                                          boi_token_id=4, eoi_token_id=5, eol_token_id=6, eof_token_id=7)).eval()
    return ours, LlamaForCausalLM(LlamaConfig(**SMALL)).eval()


def _deprecations(call) -> list[str]:
    """The FutureWarning/DeprecationWarning messages `call()` raises, with the class name blanked out."""
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        call()
    return [
        str(w.message).replace("Emu3LMForCausalLM", "MODEL").replace("LlamaForCausalLM", "MODEL")
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning))
    ]


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_forward_takes_the_cache_under_both_names(lm, ref, name):
    """`cache=` (transformers >= 5.24) and `past_key_values=` (older generate, older callers) are the same thing."""
    from transformers import DynamicCache

    ids = ref["lm.batch0.input_ids"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old name's deprecation is pinned below
        full = lm(ids).logits
        store = DynamicCache(config=lm.config)
        lm(ids[:, :-1], use_cache=True, **{name: store})
        assert store.get_seq_length() == ids.shape[1] - 1  # the given cache object was filled, not a fresh one
        last = lm(ids[:, -1:], use_cache=True, **{name: store}).logits
    torch.testing.assert_close(last[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("names", [("past_key_values",), ("cache",), ("cache", "past_key_values")])
def test_old_cache_name_warns_exactly_as_transformers_llama_does(names):
    """transformers' common test `test_bc_cache_name_forward`: the old keyword warns (or not) like Llama, word for
    word, on whichever release is installed, and the cache it names is the one used."""
    from transformers import DynamicCache

    if "cache" in names and OUTPUT_CACHE_FIELD != "cache":  # Llama ignores it there; ours takes it, tested above
        pytest.skip("before transformers 5.24 `cache` is not a transformers name (Llama ignores it); both at once are "
                    "refused")
    ours, llama = _tiny_pair()
    ids = torch.tensor([[1, 9, 10, 11]])
    seen = {}
    for label, model in (("ours", ours), ("llama", llama)):
        caches = {name: DynamicCache() for name in names}
        seen[label] = _deprecations(lambda: model(ids, use_cache=True, **caches))
        assert caches[names[0]].get_seq_length() == 4  # `cache` wins when both are given, like Llama
    assert seen["ours"] == seen["llama"]
    if OUTPUT_CACHE_FIELD == "cache":  # the renaming releases: the old name must be noticed
        assert any("past_key_values" in m for m in seen["ours"]) == ("past_key_values" in names)


def test_both_cache_names_at_once_before_the_rename_are_refused(lm, ref):
    """Before transformers 5.24 (no deprecation machinery for `cache` there) two different caches are ambiguous."""
    from transformers import DynamicCache

    if OUTPUT_CACHE_FIELD == "cache":
        pytest.skip("transformers >= 5.24: `cache` wins with a warning, as on Llama (test above)")
    with pytest.raises(ValueError, match="Pass only `cache`"):
        lm(ref["lm.batch0.input_ids"], cache=DynamicCache(), past_key_values=DynamicCache())


def test_outputs_carry_the_cache_where_transformers_own_llama_does():
    """Our output exposes the same fields as the installed release's Llama (the field `generate` reads back)."""
    ours, llama = _tiny_pair()
    ids = torch.tensor([[1, 9, 10, 11]])
    with torch.no_grad():
        ours_out, llama_out = ours(ids, use_cache=True), llama(ids, use_cache=True)
    assert set(ours_out.keys()) == set(llama_out.keys())
    cache_field = next(k for k, v in llama_out.items() if k != "logits")
    assert getattr(ours_out, cache_field).get_seq_length() == 4


def test_no_deprecation_warning_from_our_calls(lm, ref):
    """A normal forward, generate and the engine raise no FutureWarning/DeprecationWarning at all."""
    from emu3_hf.generation import generate_image_tokens

    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        lm.generate(ref["lm.gen0.input_ids"], max_new_tokens=4, do_sample=False)
        lm(ref["lm.batch0.input_ids"], labels=ref["lm.batch0.input_ids"])
        generate_image_tokens(lm, ref["imggen.pos_input_ids"], negative_input_ids=ref["imggen.neg_input_ids"],
                              height=3, width=4, do_sample=False, cache_implementation="static")
    bad = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not bad, [f"{w.filename}:{w.lineno}: {w.message}" for w in bad]


# ---- pins: the transformers modules the LM still uses, against independent formulas -------------------------------


def test_rms_norm_is_the_fp32_root_mean_square(lm):
    norm = lm.model.norm
    x = torch.randn(2, 5, lm.config.hidden_size)
    expected = norm.weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + lm.config.rms_norm_eps))
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-6)


def test_mlp_is_swiglu(lm):
    mlp = lm.model.layers[0].mlp
    x = torch.randn(2, 3, lm.config.hidden_size)
    expected = mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    torch.testing.assert_close(mlp(x), expected)


def test_rotary_embedding_is_theta_powers(lm):
    """cos/sin at position p and frequency i are cos(p / theta^(2i/d)), duplicated over both halves."""
    d, theta = lm.config.head_dim, lm.config.rope_theta
    positions = torch.tensor([[0, 1, 5, 17]])
    cos, sin = lm.model.rotary_emb(torch.zeros(1, 4, d), position_ids=positions)
    freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    angles = positions[0, :, None].double() * freqs  # (4, d/2)
    torch.testing.assert_close(cos[0].double(), torch.cat([angles, angles], -1).cos(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sin[0].double(), torch.cat([angles, angles], -1).sin(), atol=1e-6, rtol=1e-6)
