"""Per-command and per-index costs of the MongoDB server at LUCID_MONGODB_URL.

Run with any Python that has pymongo (the SecantusDB venv does):
    .venv-mongo/bin/python tools/store-microbench.py [DOCS]
It writes to the database `store_microbench` and drops its collections after.
"""
import datetime
import os
import sys
import time

from pymongo import MongoClient

URL = os.environ.get("LUCID_MONGODB_URL", "mongodb://127.0.0.1:27017")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
db = MongoClient(URL)["store_microbench"]
now = datetime.datetime.now(datetime.timezone.utc)


def record(tag, i):
    """A document shaped like a batch item's validation record."""
    node = f"node-{i % 1000:04d}"
    return {"_id": f"batch-{tag}:{i:06d}", "node_id": node, "is_valid": True,
            "score": 41.25, "confidence": 0.8, "suspicious": False,
            "output_hash": "ab" * 32, "timestamp": now, "nonce": f"n{i}",
            "node_type": "relay", "pool_id": None, "validation_time_ms": 0.3,
            "errors": [], "status": "succeeded", "error_code": None,
            "validated_at": now + datetime.timedelta(microseconds=i),
            "batch_id": f"batch-{tag}", "chunk_index": i // 500, "item_index": i,
            "nonce_key": f"{node}:n{i}"}


INDEXES = {
    "no secondary index": [],
    "node_id+validated_at": [([("node_id", 1), ("validated_at", -1)], {})],
    "nonce_key unique sparse": [([("nonce_key", 1)], {"unique": True, "sparse": True})],
    "both (poot_validations)": [([("node_id", 1), ("validated_at", -1)], {}),
                                ([("nonce_key", 1)], {"unique": True, "sparse": True})],
}

print(f"insert_many of {N} records in groups of 500, by the collection's indexes:")
for i, (name, indexes) in enumerate(INDEXES.items()):
    col = db[f"records_{i}"]
    col.drop()
    for keys, opts in indexes:
        col.create_index(keys, **opts)
    docs = [record(i, k) for k in range(N)]
    t = time.perf_counter()
    for k in range(0, N, 500):
        col.insert_many(docs[k:k + 500], ordered=False)
    dt = time.perf_counter() - t
    print(f"  {name:26s} {dt:6.2f} s  {dt / N * 1e6:6.1f} us/doc")
    col.drop()

col = db["batches"]
col.drop()
col.create_index([("created_at", -1)])
small = lambda i: {"_id": f"b{i}", "status": "queued", "total": 1, "created_at": now}
t = time.perf_counter()
for i in range(500):
    col.insert_one(small(i))
one = (time.perf_counter() - t) / 500
t = time.perf_counter()
for k in range(10):
    col.insert_many([small(1000 + k * 50 + j) for j in range(50)])
many = (time.perf_counter() - t) / 500
print(f"small document: insert_one {one * 1e3:.2f} ms each; insert_many of 50 {many * 1e3:.2f} ms per document")
col.drop()
