"""``emu3 demo``: serve the Gradio demo (:mod:`emu3_hf.demo`) or export it as a Space folder.

Example:
    ```bash
    emu3 demo                                   # the embedded model on http://127.0.0.1:7860
    emu3 demo --model me/emu3-cats --port 8000  # a pipeline folder or repo id
    emu3 demo --export-space my-space --model me/emu3-cats   # app.py + requirements.txt + README.md
    ```
"""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> int:
    from .demo import build_demo, check_model, export_space

    if args.export_space is not None:
        folder = export_space(args.export_space, args.model)
        print(f"wrote {folder}/app.py, requirements.txt and README.md: push the folder as a Gradio Space")
        return 0
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}.")
    check_model(args.model)  # a bad folder or id is refused before gradio or the model load
    demo = build_demo(args.model, device=args.device)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


COMMANDS = {"demo": _demo}
