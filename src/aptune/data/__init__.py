"""Tasks and data: GLUE, Alpaca-format instruction data, multiple-choice sets, batching.

Data is read from the folder the caller names, and only there; without one it is found in ``$APTUNE_DATA``,
the ``shared/data`` folder beside the checkout, or the Hugging Face hub, in that order
(:mod:`aptune.data.resolve`).

* :func:`load_glue_task` -> :class:`TaskData` (``train``, ``eval``, ``num_labels``, ``metric_names``...)
* :func:`load_instruction_data` -> :class:`InstructionData` (labels only on response tokens)
* :func:`load_arc`, :func:`load_sciq`, :func:`load_mmlu`, :func:`load_mc_jsonl`, :func:`load_mc_task`
  -> :class:`MCDataset` of :class:`MCItem` for :func:`aptune.eval.mc.evaluate_multiple_choice`
* :func:`load_user_classification` -> :class:`TaskData`, :func:`load_user_instruction_data`: a user's own
  CSV / TSV / JSON Lines / Parquet files (:mod:`aptune.data.user_files`)
* :func:`collate`, :class:`Collator`, :class:`LengthGroupedBatchSampler`, :func:`make_dataloader`,
  :func:`seed_everything`; :func:`split_examples`, :func:`subsample` (seeded, order-preserving)
"""

from aptune.data.collate import Collator, LengthGroupedBatchSampler, collate, make_dataloader, seed_everything
from aptune.data.files import DataFormatError
from aptune.data.glue import GLUE_TASKS, GlueExample, TaskData, glue_task_spec, load_glue_examples, load_glue_task
from aptune.data.instruct import InstructionData, InstructionFields, InstructionRecord, load_instruction_data
from aptune.data.multiple_choice import (
    MCDataset,
    MCItem,
    load_arc,
    load_mc_jsonl,
    load_mc_task,
    load_mmlu,
    load_sciq,
)
from aptune.data.resolve import DataNotFoundError, DataSource, find_shared_data_dir, resolve_data
from aptune.data.splits import split_examples, subsample
from aptune.data.user_files import (
    TableColumns,
    load_user_classification,
    load_user_instruction_data,
    select_metrics,
)

__all__ = [
    "GLUE_TASKS",
    "Collator",
    "DataFormatError",
    "DataNotFoundError",
    "DataSource",
    "GlueExample",
    "InstructionData",
    "InstructionFields",
    "InstructionRecord",
    "LengthGroupedBatchSampler",
    "MCDataset",
    "MCItem",
    "TableColumns",
    "TaskData",
    "collate",
    "find_shared_data_dir",
    "glue_task_spec",
    "load_arc",
    "load_glue_examples",
    "load_glue_task",
    "load_instruction_data",
    "load_mc_jsonl",
    "load_mc_task",
    "load_mmlu",
    "load_sciq",
    "load_user_classification",
    "load_user_instruction_data",
    "make_dataloader",
    "resolve_data",
    "seed_everything",
    "select_metrics",
    "split_examples",
    "subsample",
]
