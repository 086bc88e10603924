"""One training layout of a Llama-shaped model on the GPUs of this host: step time, throughput, peak memory.

Run under torchrun, one process per GPU, once per layout (an out-of-memory layout then fails alone):

    torchrun --nproc-per-node=4 benchmarks/planner_gpu.py --shape 8b --seq 2048 --gbs 32 \
        --tp 2 --pp 1 --mbs 1 [--teacher 8b] --out results.jsonl

It builds the model from megatron-core's local (non-Transformer-Engine) layer spec with random
weights — the device has no TE, so attention is unfused — wraps it in Megatron DDP with fp32 grad
reduction and the distributed optimizer, and runs synthetic batches through megatron-core's
pipeline schedule. With --teacher, a frozen teacher's logits drive a forward-KL loss on the
student's (TP-aware), as in logits-only distillation. Rank 0 appends one JSON line: the layout,
seconds per step, tokens/s/GPU, model TFLOP/s/GPU, peak allocated/reserved GiB (max over ranks)
and the launcher's memory estimate for the same layout (launcher/planning/memory.py, attention unfused).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launcher.planning import memory as mm  # noqa: E402  (pure Python: the same model the planner uses)

SHAPES = {  # layers, hidden, ffn, heads, query groups, vocab
    "8b": mm.Shape(32, 4096, 14336, 32, 8, 128256),
    "4b-depth": mm.Shape(16, 4096, 14336, 32, 8, 128256),
    "4b-width": mm.Shape(32, 3072, 9216, 32, 8, 128256, head_dim=128),
    "2b": mm.Shape(16, 2048, 8192, 16, 8, 128256),
}


def transformer_config(shape: mm.Shape, args, pipeline: int):
    from megatron.core.transformer import TransformerConfig

    return TransformerConfig(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, ffn_hidden_size=shape.ffn_hidden_size,
        num_attention_heads=shape.num_attention_heads, num_query_groups=shape.num_query_groups,
        kv_channels=shape.kv_channels,
        normalization="RMSNorm", gated_linear_unit=True, activation_func=torch.nn.functional.silu,
        add_bias_linear=False, hidden_dropout=0.0, attention_dropout=0.0,
        tensor_model_parallel_size=args.tp, pipeline_model_parallel_size=pipeline,
        sequence_parallel=args.tp > 1, bf16=True, params_dtype=torch.bfloat16, pipeline_dtype=torch.bfloat16,
        apply_rope_fusion=False, masked_softmax_fusion=False, bias_activation_fusion=False,
        bias_dropout_fusion=False, persist_layer_norm=False, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False, attention_softmax_in_fp32=True,
        recompute_granularity=None, variable_seq_lengths=False,
    )


def build_model(shape: mm.Shape, args, pipeline: int, trainable: bool):
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    config = transformer_config(shape, args, pipeline)
    model = GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
                     vocab_size=shape.vocab_size, max_sequence_length=args.seq,
                     pre_process=parallel_state.is_pipeline_first_stage(),
                     post_process=parallel_state.is_pipeline_last_stage(),
                     share_embeddings_and_output_weights=False, position_embedding_type="rope",
                     rotary_base=500000).cuda()
    if not trainable:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return model, config


def kl_loss(student_logits, teacher_logits):
    """Forward KL(teacher‖student) over a vocabulary split across TP ranks, per token."""
    from megatron.core import parallel_state

    group = parallel_state.get_tensor_model_parallel_group()

    def log_softmax(x):
        x = x.float()
        top = x.max(dim=-1, keepdim=True).values
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
        shifted = x - top
        denom = shifted.exp().sum(dim=-1, keepdim=True)
        dist.all_reduce(denom, group=group)
        return shifted - denom.log()

    t = log_softmax(teacher_logits)
    s = log_softmax(student_logits)
    per_token = (t.exp() * (t - s)).sum(dim=-1)
    dist.all_reduce(per_token, group=group)
    return per_token.mean()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=SHAPES, default="8b")
    parser.add_argument("--teacher", choices=SHAPES, default=None)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--gbs", type=int, default=32)
    parser.add_argument("--mbs", type=int, default=1)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--chosen", action="store_true", help="mark the planner's choice")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl")
    parallel_state.initialize_model_parallel(args.tp, args.pp)
    tensor_parallel.model_parallel_cuda_manual_seed(1234)
    dp = world // (args.tp * args.pp)
    accum = args.gbs // (args.mbs * dp)
    shape = SHAPES[args.shape]
    teacher_shape = SHAPES[args.teacher] if args.teacher else None
    record = {"shape": args.shape, "teacher": args.teacher, "world": world, "tp": args.tp, "pp": args.pp, "cp": 1,
              "dp": dp, "mbs": args.mbs, "gbs": args.gbs, "seq": args.seq, "grad_accum": accum,
              "chosen": args.chosen, "stack": f"torch {torch.__version__}, megatron-core local spec, no TE "
                                              f"(unfused attention), bf16, distributed optimizer"}
    lay = mm.Layout(args.tp, args.pp, 1, dp, args.mbs, args.seq, accum, args.tp > 1, "unfused")
    estimate = mm.training_memory(shape, lay, teacher_shape)
    record["est_memory_gib"] = round(estimate.total / mm.GIB, 2)
    record["est_breakdown"] = estimate.gib()
    try:
        student, config = build_model(shape, args, args.pp, trainable=True)
        ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=True,
                                                   use_distributed_optimizer=True, average_in_collective=True)
        model = DistributedDataParallel(config=config, ddp_config=ddp_config, module=student)
        config.finalize_model_grads_func = finalize_model_grads  # DP/PP gradient reduction, as in training
        config.no_sync_func = model.no_sync
        config.grad_sync_func = model.start_grad_sync
        optimizer = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-5, bf16=True,
                                                           use_distributed_optimizer=True, clip_grad=1.0),
                                           [model])
        teacher = build_model(teacher_shape, args, args.pp, trainable=False)[0] if teacher_shape else None
        mask = torch.ones(1, 1, args.seq, args.seq, dtype=torch.bool, device="cuda").tril().logical_not()
        position_ids = torch.arange(args.seq, device="cuda").unsqueeze(0).expand(args.mbs, -1)

        def batches():
            while True:
                tokens = torch.randint(0, shape.vocab_size, (args.mbs, args.seq), device="cuda")
                yield tokens, torch.roll(tokens, -1, dims=1)

        def forward_step(data_iterator, module):
            tokens, labels = next(data_iterator)
            if teacher is None:
                loss = module(tokens, position_ids, mask, labels=labels)

                def reduce(output):
                    value = output.float().mean()
                    return value, {"loss": value.detach()}
                return loss, reduce
            logits = module(tokens, position_ids, mask)
            with torch.no_grad():
                teacher_logits = teacher(tokens, position_ids, mask)

            def reduce_kl(student_logits):
                value = kl_loss(student_logits, teacher_logits)
                return value, {"loss": value.detach()}
            return logits, reduce_kl

        schedule = get_forward_backward_func()
        data = batches()
        timings = []
        for step in range(args.warmup + args.steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            optimizer.zero_grad()
            model.zero_grad_buffer()
            schedule(forward_step_func=forward_step, data_iterator=data, model=[model], num_microbatches=accum,
                     seq_length=args.seq, micro_batch_size=args.mbs, forward_only=False)
            optimizer.step()
            torch.cuda.synchronize()
            if step >= args.warmup:
                timings.append(time.perf_counter() - start)
        peak = torch.tensor([torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()],
                            dtype=torch.float64, device="cuda")
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        step_s = sorted(timings)[len(timings) // 2]
        tokens = args.gbs * args.seq
        flops = mm.flops_per_token(shape, args.seq) + (mm.forward_flops_per_token(teacher_shape, args.seq)
                                                       if teacher_shape else 0)
        record.update(ok=True, step_s=round(step_s, 4), tokens_per_s_per_gpu=round(tokens / step_s / world, 1),
                      model_tflops_per_gpu=round(tokens * flops / step_s / world / 1e12, 1),
                      peak_allocated_gib=round(peak[0].item() / mm.GIB, 2),
                      peak_reserved_gib=round(peak[1].item() / mm.GIB, 2))
        record["est_error_pct"] = round(100 * (record["est_memory_gib"] - record["peak_reserved_gib"])
                                        / record["peak_reserved_gib"], 1)
    except torch.cuda.OutOfMemoryError as exc:
        record.update(ok=False, error=f"OOM: {str(exc).splitlines()[0][:200]}")
    if rank == 0:
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
    gc.collect()
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()
    return 0 if record.get("ok") else 3


if __name__ == "__main__":
    sys.exit(main())
