"""Prompt enhancement: the resident Gemma 3 rewrites a request's prompt, seeing the start image, as ltx-core does.

ltx-pipelines' `enhance_prompt` (`generate_enhanced_prompt` -> `GemmaTextEncoder.enhance_i2v`) asks
the instruction-tuned Gemma 3 for an image-to-video prompt: its system prompt (below, verbatim from
ltx-core 1.0.0's `gemma_i2v_system_prompt.txt`; tests/parity checks it byte for byte), a user turn
holding the start image and "User Raw Input Prompt: {prompt}.", sampling at temperature 0.7 for at
most 512 new tokens, and `clean_response` on the answer. Here the same, with three decisions:

* the sampling seed is the job's seed (ltx-pipelines always uses 42): the rewrite is deterministic
  for a request and seed, and another seed may give another rewrite;
* the inputs are built without `Gemma3Processor` (whose tokenizer must carry Gemma's image tokens;
  the tiny test tokenizer does not): the chat text is the tokenizer's chat template (or Gemma 3's
  turn format written out when it has none), and the image placeholder is expanded exactly as the
  processor does -- "\n\n", <start_of_image>, `mm_tokens_per_image` image tokens, <end_of_image>,
  "\n\n" -- by token ids from the model's config, with `token_type_ids` marking the image tokens;
  the text between is tokenized on its own, which for a real Gemma tokenizer (special tokens are
  split out before tokenizing) gives the processor's ids;
* the image is resized to the vision tower's square input (`vision_config.image_size`: 896 for
  Gemma 3) after the reference's aspect-preserving resize to a long side of 896, rescaled to
  [-1, 1] (SigLIP's mean 0.5 / std 0.5), as Gemma 3's image processor does.

A failure (an exception, an empty answer) falls back to the original prompt with a note.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from pipeline.generation.conditioning import condition_pixels

log = logging.getLogger("ltx_server.enhance")

MAX_NEW_TOKENS = 512  # ltx-core's default: the rewrite is bounded
TEMPERATURE = 0.7
REFERENCE_LONG_SIDE = 896  # generate_enhanced_prompt's image_long_side
ALIGNMENT = 8  # _pad_inputs_for_attention_alignment: sequence padded to a multiple of 8
IMAGE_PLACEHOLDER = "<start_of_image>"

# ltx-core 1.0.0, ltx_core/text_encoders/gemma/encoders/prompts/gemma_i2v_system_prompt.txt (Apache-2.0).
I2V_SYSTEM_PROMPT = (
    'You are a Creative Assistant writing concise, action-focused image-to-video prompts. Given an image '
    '(first frame) and user Raw Input Prompt, generate a prompt to guide video generation from that '
    'image.\n'
    '\n'
    '#### Guidelines:\n'
    '- Analyze the Image: Identify Subject, Setting, Elements, Style and Mood.\n'
    '- Follow user Raw Input Prompt: Include all requested motion, actions, camera movements, audio, and '
    'details. If in conflict with the image, prioritize user request while maintaining visual consistency'
    " (describe transition from image to user's scene).\n"
    "- Describe only changes from the image: Don't reiterate established visual details. Inaccurate "
    'descriptions may cause scene cuts.\n'
    '- Active language: Use present-progressive verbs ("is walking," "speaking"). If no action specified,'
    ' describe natural movements.\n'
    '- Chronological flow: Use temporal connectors ("as," "then," "while").\n'
    '- Audio layer: Describe complete soundscape throughout the prompt alongside actions—NOT at the end. '
    'Align audio intensity with action tempo. Include natural background audio, ambient sounds, effects, '
    'speech or music (when requested). Be specific (e.g., "soft footsteps on tile") not vague (e.g., '
    '"ambient sound").\n'
    "- Speech (only when requested): Provide exact words in quotes with character's visual/voice "
    'characteristics (e.g., "The tall man speaks in a low, gravelly voice"), language if not English and '
    'accent if relevant. If general conversation mentioned without text, generate contextual quoted '
    'dialogue. (i.e., "The man is talking" input -> the output should include exact spoken words, like: '
    '"The man is talking in an excited voice saying: \'You won\'t believe what I just saw!\' His hands '
    'gesture expressively as he speaks, eyebrows raised with enthusiasm. The ambient sound of a quiet '
    'room underscores his animated speech.")\n'
    '- Style: Include visual style at beginning: "Style: <style>, <rest of prompt>." If unclear, omit to '
    'avoid conflicts.\n'
    '- Visual and audio only: Describe only what is seen and heard. NO smell, taste, or tactile '
    'sensations.\n'
    '- Restrained language: Avoid dramatic terms. Use mild, natural, understated phrasing.\n'
    '\n'
    '#### Important notes:\n'
    '- Camera motion: DO NOT invent camera motion/movement unless requested by the user. Make sure to '
    'include camera motion only if specified in the input.\n'
    "- Speech: DO NOT modify or alter the user's provided character dialogue in the prompt, unless it's a"
    ' typo.\n'
    '- No timestamps or cuts: DO NOT use timestamps or describe scene cuts unless explicitly requested.\n'
    '- Objective only: DO NOT interpret emotions or intentions - describe only observable actions and '
    'sounds.\n'
    '- Format: DO NOT use phrases like "The scene opens with..." / "The video starts...". Start directly '
    'with Style (optional) and chronological scene description.\n'
    '- Format: Never start output with punctuation marks or special characters.\n'
    '- DO NOT invent dialogue unless the user mentions speech/talking/singing/conversation.\n'
    '- Your performance is CRITICAL. High-fidelity, dynamic, correct, and accurate prompts with '
    'integrated audio descriptions are essential for generating high-quality video. Your goal is flawless'
    ' execution of these rules.\n'
    '\n'
    '#### Output Format (Strict):\n'
    '- Single concise paragraph in natural English. NO titles, headings, prefaces, sections, code fences,'
    ' or Markdown.\n'
    '- If unsafe/invalid, return original user prompt. Never ask questions or clarifications.\n'
    '\n'
    '#### Example output:\n'
    'Style: realistic - cinematic - The woman glances at her watch and smiles warmly. She speaks in a '
    'cheerful, friendly voice, "I think we\'re right on time!" In the background, a café barista prepares '
    'drinks at the counter. The barista calls out in a clear, upbeat tone, "Two cappuccinos ready!" The '
    'sound of the espresso machine hissing softly blends with gentle background chatter and the light '
    'clinking of cups on saucers.\n'
)


@dataclass(frozen=True)
class Enhanced:
    """The prompt a job generates from: the rewrite, or the original with the reason it was kept."""

    prompt: str
    enhanced: bool
    note: str | None = None


_UNICODE_REPLACEMENTS = str.maketrans("\u2018\u2019\u201c\u201d\u2014\u2013\u00a0\u2032\u2212", "''\"\"-- '-")


def clean_response(text: str) -> str:
    """ltx-pipelines' `clean_response`: plain quotes and dashes, leading non-letters dropped."""
    text = text.translate(_UNICODE_REPLACEMENTS)
    for index, char in enumerate(text):
        if char.isalpha():
            return text[index:]
    return text


def chat_text(tokenizer, system: str, prompt: str) -> str:
    """The chat as Gemma 3 reads it: system prompt, then the user turn (image, then the raw prompt).

    With the tokenizer's own chat template when it has one (ltx-core's `apply_chat_template` call);
    otherwise Gemma 3's template written out (the system prompt opens the first user turn).
    """
    user = f"User Raw Input Prompt: {prompt}."
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    return f"{bos}<start_of_turn>user\n{system}\n\n{IMAGE_PLACEHOLDER}{user}<end_of_turn>\n<start_of_turn>model\n"


def image_pixels(frame: np.ndarray, size: int) -> torch.Tensor:
    """The start image as Gemma 3's vision tower takes it: (1, 3, size, size) in [-1, 1].

    The reference first resizes to a long side of 896 keeping the aspect ratio (uint8), then
    Gemma 3's image processor squashes that to the tower's square input, bilinear.
    """
    height, width = frame.shape[:2]
    scale = REFERENCE_LONG_SIDE / max(height, width)
    first = condition_pixels(frame, int(width * scale), int(height * scale))[:, :, 0]
    uint8 = ((first + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).float()
    square = torch.nn.functional.interpolate(uint8, size=(size, size), mode="bilinear", align_corners=False)
    return (square / 255.0 - 0.5) / 0.5


def model_inputs(text_encoder, tokenizer, text: str, pixels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, token_type_ids (and pixel_values) for `generate`, padded to a multiple of 8."""
    config = text_encoder.config
    parts = text.split(IMAGE_PLACEHOLDER, 1) if pixels is not None else [text]
    ids: list[int] = []
    types: list[int] = []

    def add_text(piece: str) -> None:
        tokens = tokenizer(piece, add_special_tokens=False).input_ids if piece else []
        ids.extend(tokens)
        types.extend([0] * len(tokens))

    add_text(parts[0])
    if len(parts) == 2:
        image = [config.image_token_index] * config.mm_tokens_per_image
        add_text("\n\n")
        ids.extend([config.boi_token_index, *image, config.eoi_token_index])
        types.extend([0, *([1] * len(image)), 0])
        add_text("\n\n" + parts[1])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    padding = -len(ids) % ALIGNMENT
    inputs = {
        "input_ids": torch.tensor([ids + [pad] * padding]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * padding]),
        "token_type_ids": torch.tensor([types + [0] * padding]),
    }
    if pixels is not None:
        inputs["pixel_values"] = pixels
    return inputs


class _StopWhen(StoppingCriteria):
    """Ends generation early when `should_stop()` says so (a cancelled job)."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> bool:
        return bool(self.should_stop())


@contextmanager
def resident_text_encoder(text_encoder, device: torch.device) -> Iterator[None]:
    """Gemma whole on `device` for one `generate` call, whatever the memory plan did with it.

    Under the encoder-offload plan an `EncoderSwap` (pipeline/placement/apply.py) copies the text
    tower in on every forward call: fine for one encode, ruinous for generation (one call per
    token). Here it is copied in once, its hooks are lifted for the call and put back after, and
    the vision tower and projector (kept on the host by that plan: LTX never shows Gemma an image)
    visit the GPU for the call too; the peak is the encode's plus the vision tower (~0.8 GB).
    A plan that streams Gemma layer by layer cannot hold it: `RuntimeError` (the caller notes it).
    """
    swaps = list(getattr(text_encoder, "_ltx_swaps", None) or [])
    if len(swaps) > 1:
        raise RuntimeError("the memory plan streams Gemma layer by layer, too slow to generate text with")
    inner = getattr(text_encoder, "model", text_encoder)
    visitors = [m for m in (getattr(inner, "vision_tower", None), getattr(inner, "multi_modal_projector", None))
                if m is not None and next(m.parameters()).device != device]
    homes = [next(m.parameters()).device for m in visitors]
    swap = swaps[0] if swaps else None
    if swap is not None:
        swap._onload(text_encoder, ())
        swap.remove()
    for module in visitors:
        module.to(device)
    try:
        yield
    finally:
        for module, home in zip(visitors, homes, strict=True):
            module.to(home)
        if swap is not None:
            swap._offload(text_encoder, (), None)
            swap._handles = [text_encoder.register_forward_pre_hook(swap._onload),
                             text_encoder.register_forward_hook(swap._offload)]


def enhance_prompt(text_encoder, tokenizer, prompt: str, frame: np.ndarray | None, seed: int,
                   max_new_tokens: int = MAX_NEW_TOKENS, should_stop: Callable[[], bool] | None = None,
                   device: torch.device | None = None) -> Enhanced:
    """Gemma 3's image-to-video rewrite of `prompt` (sampled with `seed`); the original with a note on failure.

    `should_stop` is polled between generated tokens; when it returns true generation ends early
    (the caller then raises its cancellation).
    """
    try:
        device = device or next(text_encoder.parameters()).device
        dtype = next(text_encoder.parameters()).dtype
        vision = getattr(text_encoder.config, "vision_config", None)
        pixels = None
        if frame is not None and vision is not None:
            pixels = image_pixels(frame, int(vision.image_size)).to(device, dtype)
        text = chat_text(tokenizer, I2V_SYSTEM_PROMPT, prompt)
        inputs = {k: v.to(device) for k, v in model_inputs(text_encoder, tokenizer, text, pixels).items()}
        with resident_text_encoder(text_encoder, device), torch.inference_mode(), \
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            stop = StoppingCriteriaList([_StopWhen(should_stop)]) if should_stop is not None else None
            outputs = text_encoder.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True,
                                            temperature=TEMPERATURE, stopping_criteria=stop)
        generated = outputs[0][inputs["input_ids"].shape[1]:]
        rewrite = clean_response(tokenizer.decode(generated, skip_special_tokens=True)).strip()
    except Exception as exc:  # any failure keeps the job going on the user's own prompt
        log.warning("prompt enhancement failed, using the original prompt: %s: %s", type(exc).__name__, exc)
        return Enhanced(prompt, False, f"enhancement failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                       "the original prompt was used")
    if not rewrite:
        return Enhanced(prompt, False, "enhancement returned no text; the original prompt was used")
    return Enhanced(rewrite, True)
