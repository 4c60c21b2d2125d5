"""Image and video understanding with Emu3 (BAAI ``Emu3-Chat``): pixels + question -> text.

The prompt is BAAI's chat layout, ``[BOS] You are a helpful assistant. USER: {vision block}{question}. ASSISTANT:``,
built by the processor (the VQ encodes the pixels); the answer comes from transformers' ``generate`` on the LM, so
every generation option, streamer and cache of transformers works here.

Example:
    ```python
    >>> from transformers import TextIteratorStreamer
    >>> from emu3_hf.pipelines import Emu3ChatPipeline
    >>> chat = Emu3ChatPipeline.from_baai("BAAI/Emu3-Chat", "BAAI/Emu3-VisionTokenizer")
    >>> chat("Describe the image.", images=PIL.Image.open("cat.png")).text[0]
    'A cat sitting on a windowsill ...'
    ```
"""

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput
from transformers import LogitsProcessor, LogitsProcessorList

from ..generation.sampling import SamplingConfig, sampling_probs
from ..processing.arguments import as_list, check_finite
from .base import Emu3PipelineBase, Generators, check_generators, onload, seeded_generator


@dataclass
class Emu3ChatPipelineOutput(BaseOutput):
    """Output of :class:`Emu3ChatPipeline`.

    Attributes:
        text: one answer per prompt, special tokens removed.
        sequences: (B, L + N) the prompt ids (left padded) followed by the generated ids.
    """

    text: list[str]
    sequences: torch.Tensor


class SeededTokenSampler(LogitsProcessor):
    """Samples each next token with the caller's ``torch.Generator``, for a ``generate`` run *greedily*: the scores
    it returns are 0 at the drawn token and -inf elsewhere, so greedy decoding keeps exactly the draw. transformers'
    own sampling draws from torch's global random state; this keeps a pipeline call reproducible from its generator
    alone and leaves the global state untouched.

    The draw is from ``softmax(top_p(top_k(scores / temperature)))`` over the whole vocabulary
    (:func:`~emu3_hf.generation.sampling.sampling_probs`; ``top_k=None`` keeps every token); one generator draws the
    whole batch, a list draws row ``i`` from generator ``i``.

    Example:
        ```python
        >>> sampler = SeededTokenSampler(SamplingConfig(top_k=None), torch.Generator().manual_seed(0))
        >>> model.generate(input_ids, do_sample=False, logits_processor=LogitsProcessorList([sampler]))
        ```
    """

    def __init__(self, sampling: SamplingConfig, generator: torch.Generator | list[torch.Generator]):
        self.sampling = sampling
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = sampling_probs(scores.float(), self.sampling)  # (B, V)
        if isinstance(self.generator, list):
            picks = torch.cat([torch.multinomial(probs[i : i + 1].to(g.device), 1, generator=g).to(scores.device)
                               for i, g in enumerate(self.generator)])  # fmt: skip
        else:
            g = self.generator
            picks = torch.multinomial(probs.to(g.device), 1, generator=g).to(scores.device)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, picks, 0.0)


class Emu3ChatPipeline(Emu3PipelineBase):
    r"""Answer questions about images or a video with Emu3.

    Components: the same four as :class:`~emu3_hf.pipelines.Emu3Pipeline` (``model``, ``vq_model``, ``tokenizer``,
    ``image_processor``), whose sibling it is (:class:`~emu3_hf.pipelines.base.Emu3PipelineBase`: loading, saving,
    LoRA); load BAAI's ``Emu3-Chat`` LM with :meth:`from_baai`. It has no guidance and no row callback: the answer is
    text, from transformers' ``generate``.

    Batches of (question, image) pairs are left padded into one ``generate`` call; images may differ in size.
    """

    def check_chat_inputs(self, prompt, images, video, codes, streamer, generator=None, do_sample=False,
                          generate_kwargs=None) -> list[str]:
        prompts = as_list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise TypeError("`prompt` must be a question string or a list of them.")
        given = [name for name, x in (("images", images), ("video", video), ("codes", codes)) if x is not None]
        if len(given) != 1:
            raise ValueError(f"Pass exactly one of `images`, `video` or `codes`, got {given or 'none'}.")
        if images is not None and len(prompts) > 1 and len(as_list(images)) != len(prompts):
            raise ValueError(f"Got {len(as_list(images))} images for {len(prompts)} prompts; pass one per prompt.")
        if video is not None and len(prompts) != 1:
            raise ValueError("Pass one question per video call (or precomputed `codes`, one clip per prompt).")
        if streamer is not None and len(prompts) != 1:
            raise ValueError("Streaming works for one prompt at a time (transformers' streamers take batch 1).")
        generate_kwargs = generate_kwargs or {}
        check_generators(generator, len(prompts) * generate_kwargs.get("num_return_sequences", 1))
        if do_sample and (generate_kwargs.get("num_beams") or 1) > 1:
            raise ValueError(f"num_beams={generate_kwargs['num_beams']} with do_sample=True: beam sampling is not "
                             "supported (it would draw from torch's global random state); use do_sample=False for "
                             "beam search, or sample without beams.")
        return prompts

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        images: Any = None,
        video: Any = None,
        codes: torch.Tensor | list | None = None,
        max_new_tokens: int = 512,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        generator: Generators = None,
        streamer: Any = None,
        return_dict: bool = True,
        **generate_kwargs: Any,
    ) -> Emu3ChatPipelineOutput | tuple:
        r"""Answer ``prompt`` about ``images`` (one per prompt, or a list of several per prompt), a ``video``
        (a list of frames, a multiple of the VQ's temporal factor, encoded as one clip) or precomputed VQ
        ``codes`` ((h, w) or (T, h, w), one per prompt).

        Args:
            max_new_tokens: passed to ``generate``.
            do_sample, temperature, top_k, top_p: greedy by default (deterministic); with ``do_sample=True`` each
                token is drawn from ``softmax(top_p(top_k(logits / temperature)))``.
            generator: a ``torch.Generator`` the sampled tokens are drawn from (a list: one per prompt, row ``i``
                drawing from generator ``i``); the same seed gives the same answer. Without one, each sampling call
                draws a fresh seed; torch's global random state is never used. Ignored when greedy.
            streamer: a ``TextStreamer`` / ``TextIteratorStreamer`` (batch 1); build it with
                ``skip_prompt=True, skip_special_tokens=True`` to stream only the answer.
            generate_kwargs: any other ``generate`` argument (``num_beams``, ``repetition_penalty``, ...).

        Returns:
            :class:`Emu3ChatPipelineOutput` (``text``, ``sequences``), or the tuple ``(text,)``.
        """
        # 1. Check inputs
        prompts = self.check_chat_inputs(prompt, images, video, codes, streamer, generator, do_sample, generate_kwargs)
        for name, value in (("temperature", temperature), ("top_p", top_p)):
            check_finite(f"`{name}`", value)
        if do_sample:  # validates temperature / top_k / top_p before any work
            sampler = SeededTokenSampler(SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p),
                                         seeded_generator(generator))  # fmt: skip
            generate_kwargs["logits_processor"] = LogitsProcessorList(
                [*generate_kwargs.get("logits_processor", []), sampler]
            )
        if images is not None and len(prompts) == 1 and isinstance(images, (list, tuple)):
            images = [list(images)]  # several images for one question

        # 2. Lay out the chat prompts (the VQ encodes the pixels)
        processor = self.make_processor()
        onload(self.vq_model)
        inputs = processor(text=prompts, image=images, video=video, codes=codes, mode="U", padding="longest")
        device = self._execution_device
        ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)

        # 3. Generate the answer with transformers' generate
        onload(self.model)
        config = self.model.config
        sequences = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,  # sampling, when asked, is the SeededTokenSampler's draw that greedy decoding keeps
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            streamer=streamer,
            **generate_kwargs,
        )

        # 4. Decode the new tokens
        answers = self.tokenizer.batch_decode(sequences[:, ids.shape[1] :], skip_special_tokens=True)
        answers = [a.strip() for a in answers]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (answers,)
        return Emu3ChatPipelineOutput(text=answers, sequences=sequences.cpu())


__all__ = ["Emu3ChatPipeline", "Emu3ChatPipelineOutput", "SeededTokenSampler"]
