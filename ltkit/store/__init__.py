"""The HDF5 feature store: the one package that imports h5py. Format: docs/store.md.

- `schema`: names, layout, chunking, attribute encoding, schema version
- `validate`: `is_store`, and the checks `open_store` makes (attributes, datasets, labels)
- `reader`: `open_store` -> `Store`, numpy arrays out (`fastread`: the direct path for maps)
- `writer`: `create_store`, `StoreWriter` (crash-safe: rows filled in place); `pack`: compression
- `resume`: the resumable partial behind `extract`; `join`: shard stores into one
- `describe`: a plain-JSON summary of a store (`ltkit inspect`)
"""

from ltkit.store.describe import describe
from ltkit.store.join import join_shards
from ltkit.store.pack import pack_store
from ltkit.store.reader import Store, earlier_store, open_store
from ltkit.store.resume import BackgroundWriter, Progress, exclusive, open_or_create, resumable
from ltkit.store.schema import (
                                ATTR_GROUP,
                                COMPRESSIONS,
                                JSON_ATTRS,
                                READ_BLOCK_BYTES,
                                REQUIRED_ATTRS,
                                SCHEMA,
                                SCHEMA_VERSION,
                                SPLITS,
                                VIEWS,
                                StoreLayout,
)
from ltkit.store.validate import is_store
from ltkit.store.writer import StoreWriter, create_store

__all__ = ["ATTR_GROUP", "COMPRESSIONS", "JSON_ATTRS", "READ_BLOCK_BYTES", "REQUIRED_ATTRS", "SCHEMA",
           "SCHEMA_VERSION", "SPLITS", "VIEWS", "BackgroundWriter", "Progress", "Store", "StoreLayout",
           "StoreWriter", "create_store", "describe", "earlier_store", "exclusive", "is_store", "join_shards",
           "open_or_create", "open_store", "pack_store", "resumable"]
