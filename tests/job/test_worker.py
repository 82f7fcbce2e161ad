"""The faust app as built for `ttbridge worker` (no broker needed to build it)."""
from app.job.worker import build_app
from app.settings import load


def test_the_click_table_opens_rocksdb_with_small_memtables_and_cache(tmp_path):
    # faust's defaults are 3 x 64 MB memtables and a 2 GB block cache per partition: with them a
    # worker holding 1M clicks peaked at 541 MB (bench, 2026-12-02); see bench/README.md.
    settings = load({"TIKTOK_ACCESS_TOKEN": "worker-test-token-000", "TIKTOK_PIXEL_CODE": "WORKERPIXEL",
                     "TTBRIDGE_DATA_DIR": str(tmp_path)})
    store = build_app(settings, run_retrier=False).ttbridge.clicks.table.data
    options = store.rocksdb_options
    assert (options.write_buffer_size, options.max_write_buffer_number, options.block_cache_size) == (
        4 << 20, 2, 8 << 20)
    db = store._db_for_partition(0)  # opens the partition's RocksDB with exactly these options
    db.put(b"k", b"v")
    assert db.get(b"k") == b"v"
