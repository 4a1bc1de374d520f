#!/usr/bin/python3
"""Writes a CLIP ViT-B/32 with random weights as ONNX, for timing embedding throughput.

The two towers have the layout and size of OpenAI's CLIP ViT-B/32 (image tower about 88M
parameters, text tower about 63M), so a forward pass costs what the real model's does; the
weights are random (fixed seed), so the embeddings mean nothing. Use it only for benchmarks.

Output directory (argument 1):
  vision_model.onnx  pixel_values float32 [batch,3,224,224] -> image_embeds float32 [batch,512]
  text_model.onnx    input_ids int64 [batch,77], attention_mask int64 [batch,77]
                     -> text_embeds float32 [batch,512]
The embeddings are projected but not normalised, as in the usual CLIP ONNX exports.

Needs only torch and onnx (Debian: python3-torch, python3-onnx).
"""

import argparse
import json
import os
import sys

import torch
from torch import nn

SEED = 0
OPSET = 14


class QuickGELU(nn.Module):
    """The activation OpenAI's CLIP was trained with: x * sigmoid(1.702 x)."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection, as in CLIP."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, bias=None):
        batch, length, width = x.shape
        q, k, v = self.in_proj(x).chunk(3, dim=-1)
        # [batch, heads, length, head_dim]
        q = q.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = k.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)
        v = v.reshape(batch, length, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.head_dim ** -0.5)
        if bias is not None:
            scores = scores + bias
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class ResidualBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))

    def forward(self, x, bias=None):
        x = x + self.attn(self.ln_1(x), bias)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads):
        super().__init__()
        self.blocks = nn.ModuleList([ResidualBlock(width, heads) for _ in range(layers)])

    def forward(self, x, bias=None):
        for block in self.blocks:
            x = block(x, bias)
        return x


class VisionTower(nn.Module):
    """CLIP ViT-B/32 image encoder: 7x7 patches of 32 px, class token, pre-LN, 12 layers."""

    def __init__(self, image_size=224, patch=32, width=768, layers=12, heads=12, embed_dim=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((image_size // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def forward(self, pixel_values):
        x = self.conv1(pixel_values)  # [batch, width, 7, 7]
        x = x.flatten(2).transpose(1, 2)  # [batch, 49, width]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj


class TextTower(nn.Module):
    """CLIP text encoder: 12 causal layers of width 512, final LN, pooled at the EOT token."""

    def __init__(self, vocab=49408, context=77, width=512, layers=12, heads=8, embed_dim=512):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.transformer = Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        causal = torch.full((context, context), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(self, input_ids, attention_mask):
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        # Causal mask plus padding mask over keys. With EOT pooling the padding after EOT
        # cannot reach the pooled position anyway; the mask is applied so that the graph
        # reads it as the usual CLIP text exports do (an unused input would be dropped).
        padding = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * -1e4
        bias = self.causal_mask[:length, :length] + padding
        x = self.ln_final(self.transformer(x, bias))
        # The end-of-text token has the highest id in CLIP's vocabulary (49407), so argmax
        # finds it; the cast keeps ArgMax on a type every ONNX runtime implements.
        eot = input_ids.to(torch.int32).argmax(dim=-1)
        index = eot.to(torch.int64)[:, None, None].expand(-1, 1, x.shape[-1])
        pooled = x.gather(1, index).squeeze(1)
        return pooled @ self.text_projection


def init_like_clip(vision, text):
    """Random weights with OpenAI CLIP's initialisation scales, so activations stay sane."""
    for tower, width, layers in ((vision, 768, 12), (text, 512, 12)):
        proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in tower.transformer.blocks:
            nn.init.normal_(block.attn.in_proj.weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj.bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp[0].weight, std=fc_std)
            nn.init.normal_(block.mlp[2].weight, std=proj_std)
    nn.init.normal_(text.token_embedding.weight, std=0.02)
    nn.init.normal_(text.positional_embedding, std=0.01)
    nn.init.normal_(text.text_projection, std=512 ** -0.5)


REFERENCE_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat"


def reference_pixels():
    index = torch.arange(3 * 224 * 224, dtype=torch.int64)
    return ((index % 251).to(torch.float32) / 125 - 1).reshape(1, 3, 224, 224)


def reference_text():
    ids = torch.zeros(1, 77, dtype=torch.int64)
    ids[0, : len(REFERENCE_IDS)] = torch.tensor(REFERENCE_IDS)
    mask = (torch.arange(77) < len(REFERENCE_IDS)).to(torch.int64)[None, :]
    return ids, mask


def count(module):
    return sum(p.numel() for p in module.parameters())


def export(module, args, path, input_names, output_name):
    dynamic = {name: {0: "batch"} for name in input_names}
    dynamic[output_name] = {0: "batch"}
    torch.onnx.export(
        module,
        args,
        path,
        input_names=input_names,
        output_names=[output_name],
        dynamic_axes=dynamic,
        opset_version=OPSET,
        do_constant_folding=True,
    )


def check_graph(path, inputs, output):
    import onnx

    model = onnx.load(path, load_external_data=False)
    onnx.checker.check_model(path)
    got_inputs = [i.name for i in model.graph.input]
    got_outputs = [o.name for o in model.graph.output]
    if got_inputs != inputs or got_outputs != [output]:
        sys.exit(f"{path}: inputs {got_inputs}, outputs {got_outputs}; expected {inputs} -> {output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="directory to write the .onnx files into (created if missing)")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    torch.manual_seed(SEED)
    vision = VisionTower().eval()
    text = TextTower().eval()
    init_like_clip(vision, text)

    vision_path = os.path.join(args.out_dir, "vision_model.onnx")
    text_path = os.path.join(args.out_dir, "text_model.onnx")
    with torch.no_grad():
        pixels = torch.randn(2, 3, 224, 224)
        export(vision, (pixels,), vision_path, ["pixel_values"], "image_embeds")

        ids, mask = reference_text()
        export(text, (ids.repeat(2, 1), mask.repeat(2, 1)), text_path, ["input_ids", "attention_mask"], "text_embeds")

        # Fixed inputs whose embeddings bench/models/check.ts compares against what
        # onnxruntime computes from the exported graphs.
        ref_pixels = reference_pixels()
        ref_ids, ref_mask = reference_text()
        ref_image = vision(ref_pixels)[0]
        ref_text = text(ref_ids, ref_mask)[0]

    check_graph(vision_path, ["pixel_values"], "image_embeds")
    check_graph(text_path, ["input_ids", "attention_mask"], "text_embeds")

    summary = {
        "description": "CLIP ViT-B/32 layout with random weights (seed %d); for timing only" % SEED,
        "opset": OPSET,
        "torch": torch.__version__,
        "vision_parameters": count(vision),
        "text_parameters": count(text),
        "reference": {
            "pixel_values": "((c*224*224 + y*224 + x) mod 251) / 125 - 1, batch 1",
            "image_embeds_head": [round(v, 6) for v in ref_image[:8].tolist()],
            "image_embeds_norm": round(ref_image.norm().item(), 6),
            "input_ids": "%s, padded with 0 to 77; attention_mask 1 over those" % REFERENCE_IDS,
            "text_embeds_head": [round(v, 6) for v in ref_text[:8].tolist()],
            "text_embeds_norm": round(ref_text.norm().item(), 6),
        },
        "files": {
            name: os.path.getsize(os.path.join(args.out_dir, name))
            for name in ("vision_model.onnx", "text_model.onnx")
        },
    }
    with open(os.path.join(args.out_dir, "random-model.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
