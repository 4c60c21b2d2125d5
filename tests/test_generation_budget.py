"""Size checks run before anything of the request's size exists: under an address-space limit, a request whose
vision grammar alone would need gigabytes is refused with the budget's ValueError, not a MemoryError or a kill."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("resource", reason="RLIMIT_AS is POSIX")

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import psutil, torch
    from emu3_hf import Emu3LMConfig, Emu3LMForCausalLM
    from emu3_hf.generation import budget, generate_image_tokens

    config = Emu3LMConfig(vocab_size=80, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=10**12,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, img_token_id=3, boi_token_id=4,
                          eoi_token_id=5, eol_token_id=6, eof_token_id=7)
    model = Emu3LMForCausalLM(config).eval()
    ids = torch.tensor([[1, 4, 3]])
    limit = psutil.Process().memory_info().vms + 2**30  # 1 GiB more than the process holds now
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    free = budget.free_bytes(torch.device("cpu"))
    for side in map(int, sys.argv[1:]):
        try:
            generate_image_tokens(model, ids, height=side, width=side, guidance_scale=1.0, do_sample=False)
        except BaseException as error:
            print(json.dumps({"type": type(error).__name__, "message": str(error)[:500], "free": free,
                              "limit": limit}))
        else:
            print(json.dumps({"type": None, "free": free, "limit": limit}))
    """
)


def test_a_request_beyond_memory_is_refused_before_the_grammar_is_built():
    """20000x20000: the schedule alone is 3.2 GB (KV: 0.4 TB). 3000x3000: its KV (~9 GiB) fits many machines'
    RAM but not the 1 GiB address-space limit, which the budget reads too. 3x3 runs under the same limit."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, "20000", "3000", "3"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    huge, large, small = (json.loads(line) for line in done.stdout.strip().splitlines()[-3:])
    for result in (huge, large):
        assert result["type"] == "ValueError", result
        assert "KV cache needs" in result["message"] and "GiB free" in result["message"], result
        assert result["free"] <= result["limit"]
    assert small["type"] is None, small
