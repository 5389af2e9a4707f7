"""Training samples to screen: readers per format, validation with file and line, content ids, dedup.

    >>> ds = read_dataset("train.jsonl")          # messages/ShareGPT/Alpaca JSONL or .json arrays, CSV,
    ...                                            # Parquet, HF folders, hub ids owner/name
    >>> check_invalid(ds, skip_invalid=False)      # one DataError naming file and line of every bad record
    >>> ds.samples[0].sample_id, ds.samples[0].lines   # content hash of the messages, every copy's line

See docs/SCREENING.md.
"""

from pvdata.samples.dataset import (
    FORMATS,
    Dataset,
    Record,
    Sample,
    canonical_messages,
    messages_json,
    prompt_id_of,
    sample_id_of,
)
from pvdata.samples.formats import SCHEMAS, is_preference, parse_chat
from pvdata.samples.preference import parse_sample
from pvdata.samples.readers import (
    InvalidRecordsError,
    check_invalid,
    content_hash,
    detect_format,
    read_dataset,
)
from pvdata.samples.records import ROLES, Columns, RecordError, parse_messages, parse_record
from pvdata.samples.store import invalid_sample_id, sample_rows

__all__ = [
    "FORMATS",
    "ROLES",
    "SCHEMAS",
    "Columns",
    "Dataset",
    "InvalidRecordsError",
    "Record",
    "RecordError",
    "Sample",
    "canonical_messages",
    "check_invalid",
    "content_hash",
    "detect_format",
    "invalid_sample_id",
    "is_preference",
    "messages_json",
    "parse_chat",
    "parse_messages",
    "parse_record",
    "parse_sample",
    "prompt_id_of",
    "read_dataset",
    "sample_id_of",
    "sample_rows",
]
