"""The ``data:`` config section: where the interaction log comes from and how it is preprocessed."""

from __future__ import annotations

import codecs
import itertools
import math
from dataclasses import dataclass, field

FORMATS = ("auto", "synthetic", "movielens", "recbole", "csv", "tsv", "parquet", "jsonl", "user_item", "hub")
DEDUP_POLICIES = ("keep_all", "first", "last")
SPLITS = ("time", "random")
# Side-information kinds (see data/side.py): a category, a bag of categories (genres), a number cut into
# buckets, and free text kept as text (the model-side encoder is not part of the data layer).
FEATURE_KINDS = ("token", "token_seq", "float", "title")
# cold_start: disjoint train / valid / test users (data.split). loo: warm leave-one-out, every user is a
# training user; its last item is the test target and its second-last the validation target.
# new_items: the cold_start user split, and besides the newest data.new_item_frac of the ITEMS (by first
# interaction) held out of training entirely (item cold start; eval/new_items.py).
PROTOCOLS = ("cold_start", "loo", "new_items")
DEFAULT_NEW_ITEM_FRAC = 0.1
# Formats that read a file or folder; they need data.path or a data.name the resolver can find.
FILE_FORMATS = ("auto", "movielens", "recbole", "csv", "tsv", "parquet", "jsonl", "user_item")


@dataclass
class FeatureSpec:
    """One declared user or item feature, e.g. ``{name: age, kind: token}``.

    Every kind is encoded as ids against a per-feature vocabulary where 0 is padding and 1 is "unknown"
    (a missing value, a rare category, a user or item without a row); ``title`` stays text.
    """

    name: str = ""  # the feature's name (in stats and, later, the model); also its column by default
    kind: str = ""  # token | token_seq | float | title
    column: str | None = None  # the side table's column when it differs from name (RecBole: bare name)
    sep: str | None = None  # token_seq: separator inside a field; None: whitespace (RecBole token_seq)
    max_len: int | None = None  # token_seq: keep the first max_len tokens; None: the longest list
    min_count: int = 1  # token / token_seq: categories seen on fewer rows than this map to unknown
    na_values: list[str] = field(default_factory=list)  # field values (token_seq: tokens) meaning "missing"
    # float: values are cut into buckets (ids, like a token): at `boundaries` when given (increasing
    # cut points), else at quantiles of the observed values into `buckets` buckets.
    buckets: int = 10
    boundaries: list[float] = field(default_factory=list)

    def check(self, key: str) -> None:
        """Raise a ValueError naming ``key`` (e.g. ``data.item_features[2]``) for a bad declaration."""
        if not self.name:
            raise ValueError(f"{key}.name: every feature needs a name, e.g. {{name: age, kind: token}}")
        if not self.kind:  # left out: not "unknown ''"
            raise ValueError(
                f"{key}.kind: missing for feature {self.name!r}; give one of {', '.join(FEATURE_KINDS)}, "
                f"e.g. {{name: {self.name}, kind: token}}"
            )
        if self.kind not in FEATURE_KINDS:
            raise ValueError(
                f"{key}.kind: unknown {self.kind!r} for feature {self.name!r}; "
                f"choose one of {', '.join(FEATURE_KINDS)}"
            )
        if self.column is not None and not self.column.strip():
            raise ValueError(f"{key}.column: empty column name for feature {self.name!r}")
        if self.sep is not None and (self.sep == "" or "\n" in self.sep):
            raise ValueError(f"{key}.sep: must be a non-empty separator without newlines, e.g. '|'")
        if self.max_len is not None and self.max_len < 1:
            raise ValueError(f"{key}.max_len must be >= 1 or null, got {self.max_len}")
        if self.min_count < 1:
            raise ValueError(f"{key}.min_count must be >= 1, got {self.min_count}")
        if self.buckets < 1:
            raise ValueError(f"{key}.buckets must be >= 1, got {self.buckets}")
        cuts = self.boundaries
        if not all(math.isfinite(b) for b in cuts) or any(b >= c for b, c in itertools.pairwise(cuts)):
            raise ValueError(f"{key}.boundaries must be finite and strictly increasing, got {cuts}")
        options = {
            "sep": self.sep is not None,
            "max_len": self.max_len is not None,
            "buckets": self.buckets != 10,
            "boundaries": bool(cuts),
            "min_count": self.min_count != 1,
        }
        applies = {
            "token": {"min_count"},
            "token_seq": {"sep", "max_len", "min_count"},
            "float": {"buckets", "boundaries"},
            "title": set(),
        }[self.kind]
        stray = [o for o, is_set in options.items() if is_set and o not in applies]
        if stray:  # a silently ignored option hides a mistake (e.g. buckets on a token)
            raise ValueError(
                f"{key}.{stray[0]}: does not apply to kind {self.kind!r} (feature {self.name!r})"
            )

    @property
    def source_column(self) -> str:
        return self.column or self.name


# The keys naming local data files or folders: relative to the folder a command runs from when not
# absolute (evaluation finds them from the folder training recorded; a Ray data task gets them absolute).
DATA_PATH_KEYS = ("path", "user_features_path", "item_features_path", "data_dir")


@dataclass
class DataConfig:
    format: str = "synthetic"
    path: str | None = None  # file or folder; None with `name`: look in data_dir, download if known
    name: str | None = None  # "movielens-100k", a folder name under data_dir, or (format hub) a Hub id
    data_dir: str | None = None  # None: $METAREC_DATA_DIR, else ~/.cache/metarec

    # Column mapping for csv/tsv/parquet/jsonl/hub (and RecBole field names without ":type").
    # None: guess from common names (user_id, userId, item_id, movieId, timestamp, rating, ...).
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    rating_col: str | None = None
    title_col: str | None = None  # RecBole .item column holding titles; None: the first *title* column
    sep: str | None = None  # csv/tsv separator, any length ("::" works); None: "," for csv, tab for tsv
    header: bool = True  # csv/tsv: the first line names the columns
    columns: list[str] = field(default_factory=list)  # csv/tsv with header=false: column names in order
    ordered_rows: bool = False  # no timestamp column: each user's rows are already in time order
    string_ids: bool = False  # accept non-numeric ids (e.g. Amazon ASINs); default: ids must be integers
    # The text files' encoding (the log, the side tables, item titles), a Python codec name: e.g. latin-1
    # for MovieLens' u.item. With one that writes ASCII as ASCII (latin-1, cp1252), a file that is valid
    # UTF-8 is still read as UTF-8 (textio.Utf8Text). Not for Parquet (UTF-8 by definition). Another
    # encoding is transcoded a chunk at a time into a temporary UTF-8 copy (in TMPDIR), never whole in memory.
    encoding: str = "utf-8"
    hub_split: str = "train"
    hub_config: str | None = None

    # Side information (data/side.py). None paths: the RecBole <name>.user / <name>.item next to the
    # .inter file. Side tables are CSV/TSV (with a header), Parquet, JSONL or RecBole atomic files; their id
    # column is data.user_col / data.item_col (or a guessed name), their separator data.sep.
    user_features: list[FeatureSpec] = field(default_factory=list)
    item_features: list[FeatureSpec] = field(default_factory=list)
    user_features_path: str | None = None
    item_features_path: str | None = None
    # A side table's own separator ("|" for MovieLens' u.user / u.item), any length; None: data.sep's rule
    # (the table's extension's separator where its header holds no data.sep; RecBole .user/.item: tab).
    user_features_sep: str | None = None
    item_features_sep: str | None = None
    # A side table without a header line: its column names in order (the id column among them); []: it has
    # a header line.
    user_features_columns: list[str] = field(default_factory=list)
    item_features_columns: list[str] = field(default_factory=list)

    # Preprocessing.
    rating_threshold: float | None = None  # implicit feedback: keep rating >= threshold; None keeps all
    kcore: int = 0  # iterative k-core: every kept user and item has >= kcore interactions; 0: off
    dedup: str = "keep_all"  # repeated (user, item): keep_all | first | last
    protocol: str = "cold_start"  # cold_start (users held out) | loo (each user's last two items held out)
    split: str = "time"  # cold-start user split: time (newest users held out) | random; unused with loo
    # protocol new_items: the share of items, newest by first interaction, removed from every training user
    # (None: DEFAULT_NEW_ITEM_FRAC). Setting it under another protocol is an error (it would do nothing).
    new_item_frac: float | None = None
    valid_frac: float = 0.1
    test_frac: float = 0.1
    min_history: int = 2  # users with fewer interactions are dropped (one support + one query item)
    seed: int = 0
    cache: bool = True
    cache_dir: str | None = None  # None: $METAREC_CACHE_DIR, else ~/.cache/metarec/prepared

    # format: synthetic (see metarec_dist.data.synthetic.make_synthetic_sequences).
    synthetic_users: int = 400
    synthetic_items: int = 200
    synthetic_groups: int = 8
    synthetic_min_len: int = 12
    synthetic_max_len: int = 40
    synthetic_in_group_prob: float = 0.8

    def __post_init__(self) -> None:
        _choice("format", self.format, FORMATS)
        _choice("dedup", self.dedup, DEDUP_POLICIES)
        _choice("split", self.split, SPLITS)
        _choice("protocol", self.protocol, PROTOCOLS)
        if self.format in FILE_FORMATS and self.path is None and self.name is None:
            raise ValueError(
                f"data.path: format {self.format!r} reads files; set data.path to a file or folder, or "
                "data.name to a dataset such as movielens-100k (or use data.format=synthetic)"
            )
        if self.format == "hub" and not self.name:
            raise ValueError("data.name: format 'hub' needs the Hugging Face dataset id in data.name")
        check_encoding(self.encoding)
        if self.sep is not None and (self.sep == "" or "\n" in self.sep or "\r" in self.sep):
            raise ValueError("data.sep must be a non-empty separator without newlines, e.g. ',' or '::'")
        if not self.header and self.format in ("csv", "tsv") and not self.columns:
            raise ValueError(
                "data.columns: a file without header needs its column names in order, "
                "e.g. --set data.columns=[user_id,item_id,rating,timestamp]"
            )
        if self.ordered_rows and self.time_col is not None:  # the row order would win, silently
            raise ValueError(
                "data.ordered_rows: true takes each user's rows in file order as the time order, so "
                f"data.time_col ({self.time_col!r}) would be ignored; drop one of them"
            )
        if self.columns and self.header:  # the header names the columns: the list would be ignored
            raise ValueError(
                "data.columns: names the columns of a file without a header line; with data.header=true (the "
                "default) the header names them: drop data.columns, or set data.header=false"
            )
        if self.rating_threshold is not None and not math.isfinite(self.rating_threshold):
            raise ValueError("data.rating_threshold must be a finite number or null")
        if self.kcore < 0:
            raise ValueError(f"data.kcore must be >= 0 (0 turns k-core filtering off), got {self.kcore}")
        check_seed("data.seed", self.seed)
        if self.min_history < 1:
            raise ValueError(f"data.min_history must be >= 1, got {self.min_history}")
        self._check_new_items()
        for name in ("valid_frac", "test_frac"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"data.{name} must be in [0, 1), got {value}")
        if self.valid_frac + self.test_frac >= 1.0:
            raise ValueError(
                "data.valid_frac + data.test_frac must be < 1 so that some users are left for training"
            )
        for name in ("synthetic_users", "synthetic_items", "synthetic_groups", "synthetic_min_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        _check_features("user", self.user_features)
        _check_features("item", self.item_features)
        for entity in ("user", "item"):
            _check_side_table_text(self, entity)
        if self.synthetic_groups > self.synthetic_items:
            raise ValueError("data.synthetic_groups must be <= data.synthetic_items")
        if self.synthetic_min_len > self.synthetic_max_len:
            raise ValueError("data.synthetic_min_len must be <= data.synthetic_max_len")
        if not 0.0 <= self.synthetic_in_group_prob <= 1.0:
            raise ValueError("data.synthetic_in_group_prob must be in [0, 1]")

    def _check_new_items(self) -> None:
        if self.new_item_frac is None:
            return
        if self.protocol != "new_items":
            raise ValueError(
                f"data.new_item_frac: only used with data.protocol=new_items (the protocol is "
                f"{self.protocol!r}); drop it or set data.protocol=new_items"
            )
        if not 0.0 < self.new_item_frac < 1.0:
            raise ValueError(
                f"data.new_item_frac must be in (0, 1): the share of items held out of training as new "
                f"items, got {self.new_item_frac}"
            )

    @property
    def held_out_item_frac(self) -> float:
        """The share of items the new_items protocol holds out (0 under the other protocols)."""
        if self.protocol != "new_items":
            return 0.0
        return DEFAULT_NEW_ITEM_FRAC if self.new_item_frac is None else self.new_item_frac


def _check_features(entity: str, specs: list[FeatureSpec]) -> None:
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        key = f"data.{entity}_features[{i}]"
        if isinstance(spec, dict):  # DataConfig(...) built in code with plain mappings
            raise ValueError(f"{key}: expected a FeatureSpec, got a mapping (load it with the config loader)")
        spec.check(key)
        if spec.name in seen:
            raise ValueError(
                f"{key}.name: feature {spec.name!r} is declared twice "
                f"(also data.{entity}_features[{seen[spec.name]}]); give each feature its own name"
            )
        seen[spec.name] = i


def _check_side_table_text(cfg: DataConfig, entity: str) -> None:
    """``data.<entity>_features_sep`` / ``_columns``: a usable separator, non-empty unique column names."""
    sep, columns = getattr(cfg, f"{entity}_features_sep"), getattr(cfg, f"{entity}_features_columns")
    key = f"data.{entity}_features"
    if sep is not None and (sep == "" or "\n" in sep or "\r" in sep):
        raise ValueError(f"{key}_sep must be a non-empty separator without newlines, e.g. '|' or ';'")
    if any(not str(c).strip() for c in columns):
        raise ValueError(
            f"{key}_columns: an empty column name; name every column of the {entity} table (one without a "
            f"header line) in order, the {entity} id column among them, e.g. [{entity}_id, ...]"
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValueError(
            f"{key}_columns: {', '.join(map(repr, repeated))} named twice; name each column once"
        )


def check_encoding(name: str) -> None:
    """``data.encoding`` is a text encoding Python knows (not a bytes codec such as base64)."""
    try:
        "".encode(name)
    except (LookupError, TypeError):
        raise ValueError(
            f"data.encoding: unknown text encoding {name!r}; give the files' encoding as Python names it, "
            "e.g. utf-8 (the default), latin-1, cp1252 or utf-16"
        ) from None


def is_utf8(encoding: str) -> bool:
    """Whether ``encoding`` is UTF-8 under any of its names (utf8, UTF-8, ...)."""
    return codecs.lookup(encoding).name == "utf-8"


# numpy seeds must be >= 0, torch's < 2**64; the evaluation mixes a seed into a torch seed as
# seed * 1_000_003 + crc32, which stays below 2**63 for any seed below 2**32.
MAX_SEED = 2**32 - 1


def check_seed(key: str, seed: int) -> None:
    """A seed numpy and torch both take (else they fail mid-run, naming no key)."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{key} must be an integer in [0, {MAX_SEED}], got {seed}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"data.{name}: unknown {value!r}; choose one of {', '.join(allowed)}")
