"""APT in your own PyTorch loop: MiniLM (or any BERT-style model folder) pruned to 40% on SST-2 while tuning.

    python examples/custom_loop.py --model minilm --steps 1000 --output runs/custom-loop
"""

import argparse

import torch

from aptune import APT, APTConfig, APTModel, PruneConfig
from aptune.data import load_glue_task, make_dataloader
from aptune.eval.classification import evaluate_task
from aptune.models import load_tokenizer

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="minilm")
parser.add_argument("--steps", type=int, default=1000)
parser.add_argument("--train-rows", type=int, default=16000)
parser.add_argument("--output", default="runs/custom-loop")
args = parser.parse_args()
torch.manual_seed(0)

tokenizer = load_tokenizer(args.model)
task = load_glue_task("sst2", tokenizer, max_length=64, max_train_samples=args.train_rows, max_eval_samples=200)
loader = make_dataloader(task.train, 32, tokenizer.pad_token_id, shuffle=True, group_by_length=True, drop_last=True)

model = APTModel.from_pretrained(args.model, num_labels=2, seed=0)
config = APTConfig(prune=PruneConfig(density=0.4, start_fraction=0.1, num_steps=4))
apt = APT(model, config, total_steps=args.steps, seed=0)
optimizer = torch.optim.AdamW(apt.trainable_parameters(), lr=5e-4)
schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / args.steps)

model.train()
step = 0
while step < args.steps:
    for batch in loader:
        loss = apt.compute_loss(batch).loss  # cross-entropy, or the distillation mix while pruning
        loss.backward()
        apt.after_backward()  # salience and adapter importance, before clipping
        torch.nn.utils.clip_grad_norm_(apt.trainable_parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        event = apt.after_optimizer_step(optimizer)  # soft masks; cut, grow ranks, fix AdamW
        if event is not None:
            print(f"step {event.step}: pruning step {event.k}/{event.num_steps}, density {event.density:.3f}")
        step += 1
        if step == args.steps:
            break

model.eval()
print(f"dev accuracy {evaluate_task(model.model, task, tokenizer.pad_token_id)['accuracy']:.3f}, "
      f"density {apt.density():.3f}")
model.export(args.output, tokenizer=tokenizer)
print(f"exported to {args.output}")
