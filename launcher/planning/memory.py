"""Per-GPU memory and compute models for Megatron-style training of Llama-shaped models.

The terms follow Korthikanti et al. ("Reducing Activation Recomputation in Large Transformer
Models") adapted to GQA and SwiGLU, Megatron's mixed-precision layout (bf16 weights, fp32 main
grads, fp32 Adam states sharded by the distributed optimizer over DP×CP), and the two attention
paths: fused/flash (the NeMo container, Transformer Engine) stores O(seq) per head, unfused
(no Transformer Engine) materialises the full score matrix, O(seq²). Constants marked MEASURED
are refined by benchmarks/planner_gpu.py; see benchmarks/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import gpus

GIB = 1024 ** 3

# Bytes per parameter: bf16 weight, fp32 main grad (grad_reduce_in_fp32), fp32 master + Adam m, v.
WEIGHT_BYTES = 2
GRAD_BYTES = 4
OPTIMIZER_BYTES = 12
# Unfused attention keeps the softmax output (bf16) and its fp32 copy from the fp32 softmax.
UNFUSED_SCORE_BYTES = 6  # MEASURED
# Logits: bf16 output, fp32 upcast for the loss, fp32 gradient.
LOGIT_BYTES_TRAIN = 10
# Distillation adds the teacher's bf16 logits and both models' fp32 (log-)softmax for the KL term.
LOGIT_BYTES_DISTILL_EXTRA = 10
# CUDA context, NCCL and cuBLAS workspaces, allocator fragmentation.
FIXED_OVERHEAD_GIB = 3.0  # MEASURED
FRAGMENTATION = 1.05

# Without Transformer Engine the attention is unfused and the fused kernels are missing: measured
# 160-263 model TFLOP/s on an H200 (benchmarks/RESULTS.md, planner_gpu) against the 420 assumed fused.
UNFUSED_THROUGHPUT_FACTOR = 0.5  # MEASURED


@dataclass(frozen=True)
class Shape:
    """The architecture numbers the models need."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    vocab_size: int
    tie_embeddings: bool = False
    head_dim: int = 0  # 0: hidden/heads; width pruning keeps the teacher's head size

    @property
    def kv_channels(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def layer_params(self) -> int:
        h, f = self.hidden_size, self.ffn_hidden_size
        d = self.kv_channels
        q = self.num_attention_heads * d
        kv = 2 * self.num_query_groups * d
        attention = h * (q + kv) + q * h
        mlp = 3 * h * f  # gate, up, down (SwiGLU)
        norms = 2 * h
        return attention + mlp + norms

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def output_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        return (self.num_layers * self.layer_params() + self.embedding_params()
                + self.output_params() + self.hidden_size)


@dataclass(frozen=True)
class Layout:
    tp: int
    pp: int
    cp: int
    dp: int
    micro_batch_size: int
    seq_length: int
    grad_accum: int
    sequence_parallel: bool
    attention: str  # "fused" | "unfused"
    recompute: str = "none"  # "none" | "selective" | "full"


@dataclass
class MemoryEstimate:
    weights: float
    grads: float
    optimizer: float
    activations: float
    logits: float
    teacher: float
    overhead: float

    @property
    def total(self) -> float:
        return (self.weights + self.grads + self.optimizer + self.activations + self.logits
                + self.teacher) * FRAGMENTATION + self.overhead

    def gib(self) -> dict[str, float]:
        parts = {k: round(v / GIB, 2) for k, v in self.__dict__.items()}
        parts["total"] = round(self.total / GIB, 2)
        return parts


def _stage_params(shape: Shape, tp: int, pp: int) -> tuple[float, float]:
    """Parameters on one GPU of the first and of the last pipeline stage."""
    layers = shape.num_layers / pp * shape.layer_params()
    if pp == 1:
        both = layers + shape.embedding_params() + shape.output_params() + shape.hidden_size
        return both / tp, both / tp
    first = layers + shape.embedding_params()
    last = layers + (shape.output_params() or shape.embedding_params()) + shape.hidden_size
    return first / tp, last / tp


def layer_activation_bytes(shape: Shape, lay: Layout) -> float:
    """Activation bytes one transformer layer keeps for backward, for one micro-batch on one GPU."""
    s = lay.seq_length / lay.cp
    b = lay.micro_batch_size
    h, f, t = shape.hidden_size, shape.ffn_hidden_size, lay.tp
    if lay.recompute == "full":
        return 2 * s * b * h / (t if lay.sequence_parallel else 1)
    q_width = shape.num_attention_heads * shape.kv_channels
    kv_width = 2 * shape.num_query_groups * shape.kv_channels
    # Norm inputs/outputs: replicated across TP ranks unless sequence parallel shards them.
    norm_terms = 2 * s * b * h * 4
    norm_terms /= t if lay.sequence_parallel else 1
    # Q, K, V, attention output, projection input; SwiGLU fc1 out (2f), activation out (f).
    linear_terms = s * b * (2 * (q_width + kv_width) + 2 * q_width + 2 * q_width + 2 * 2 * f + 2 * f) / t
    attention_core = 0.0
    if lay.attention == "unfused" and lay.recompute != "selective":
        heads = shape.num_attention_heads / t
        attention_core = UNFUSED_SCORE_BYTES * heads * s * (lay.seq_length) * b / lay.cp
    elif lay.attention == "fused":
        attention_core = 4 * (shape.num_attention_heads / t) * s * b  # softmax statistics (fp32)
    return norm_terms + linear_terms + attention_core


def training_memory(shape: Shape, lay: Layout, teacher: Shape | None = None) -> MemoryEstimate:
    """Peak bytes on the busiest GPU for one training step (distillation when teacher is given)."""
    first, last = _stage_params(shape, lay.tp, lay.pp)
    shard = lay.dp * lay.cp
    in_flight = min(lay.pp, lay.grad_accum) if lay.pp > 1 else 1
    layers = shape.num_layers / lay.pp
    activations = layer_activation_bytes(shape, lay) * layers * in_flight
    s = lay.seq_length / lay.cp
    logit_bytes = LOGIT_BYTES_TRAIN + (LOGIT_BYTES_DISTILL_EXTRA if teacher else 0)
    logits = s * lay.micro_batch_size * shape.vocab_size / lay.tp * logit_bytes
    if lay.attention == "unfused":  # the explicit [b, 1, s, s] boolean mask, shared by all layers
        activations += lay.micro_batch_size * lay.seq_length * lay.seq_length
    teacher_bytes = 0.0
    if teacher is not None:
        t_first, t_last = _stage_params(teacher, lay.tp, lay.pp)
        teacher_bytes = WEIGHT_BYTES * max(t_first, t_last)
        # The teacher's forward keeps one layer's activations at a time (no grad).
        teacher_bytes += layer_activation_bytes(teacher, lay)
    # Busiest GPU: first stage holds the most activations, last stage holds the logits.
    first_total = first * (WEIGHT_BYTES + GRAD_BYTES + OPTIMIZER_BYTES / shard) + activations
    last_total = last * (WEIGHT_BYTES + GRAD_BYTES + OPTIMIZER_BYTES / shard) + logits + (
        activations / in_flight)
    params = first if first_total >= last_total or lay.pp == 1 else last
    return MemoryEstimate(
        weights=WEIGHT_BYTES * params,
        grads=GRAD_BYTES * params,
        optimizer=OPTIMIZER_BYTES * params / shard,
        activations=activations if (first_total >= last_total or lay.pp == 1) else activations / in_flight,
        logits=logits if (lay.pp == 1 or last_total > first_total) else 0.0,
        teacher=teacher_bytes,
        overhead=FIXED_OVERHEAD_GIB * GIB,
    )


def inference_memory(shape: Shape, pp: int, micro_batch_size: int, seq_length: int,
                     attention: str) -> MemoryEstimate:
    """Pruning: bf16 weights split over PP, one layer's activations, bf16 logits, no optimizer."""
    first, last = _stage_params(shape, 1, pp)
    lay = Layout(tp=1, pp=pp, cp=1, dp=1, micro_batch_size=micro_batch_size, seq_length=seq_length,
                 grad_accum=1, sequence_parallel=False, attention=attention)
    activations = layer_activation_bytes(shape, lay)
    logits = seq_length * micro_batch_size * shape.vocab_size * 6
    return MemoryEstimate(weights=WEIGHT_BYTES * max(first, last), grads=0.0, optimizer=0.0,
                          activations=activations, logits=logits, teacher=0.0,
                          overhead=FIXED_OVERHEAD_GIB * GIB)


def flops_per_token(shape: Shape, seq_length: int) -> float:
    """Model FLOPs of one training token: 6·params for the matmuls plus causal attention scores."""
    dense = 6 * (shape.num_layers * shape.layer_params() + shape.output_params()
                 + (shape.embedding_params() if shape.tie_embeddings else 0))
    # QK^T and AV over the query heads (heads × head dim: a width-pruned student keeps the teacher's 4096 at
    # hidden 3072), causal half
    attention = 6 * shape.num_layers * shape.num_attention_heads * shape.kv_channels * seq_length
    return dense + attention


def forward_flops_per_token(shape: Shape, seq_length: int) -> float:
    return flops_per_token(shape, seq_length) / 3


def achievable_tflops(gpu_model: str, override: float | None, attention: str = "fused") -> float:
    """The profile's gpu.achievable_tflops, else its GPU family's (config/gpus.py; the profile names a
    known family or gives the override)."""
    if override:
        return override
    family = gpus.family(gpu_model)
    if family is None:
        raise ValueError(f"unknown GPU model {gpu_model!r} without achievable_tflops")
    return family.tflops * (UNFUSED_THROUGHPUT_FACTOR if attention == "unfused" else 1.0)
