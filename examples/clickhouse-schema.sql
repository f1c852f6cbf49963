-- A ClickHouse table that fits the record (docs/record-format.md), for
-- examples/vector-clickhouse.toml: database = the record's `project`, table = its `table`.
-- Python services using LogSend write the same records into the same table.
CREATE DATABASE IF NOT EXISTS shop;

CREATE TABLE IF NOT EXISTS shop.app_logs
(
    `timestamp`   DateTime64(3, 'UTC'),
    `level`       LowCardinality(String),
    `level_num`   UInt8,
    `message`     String,
    `project`     LowCardinality(String),
    `table`       LowCardinality(String),
    -- `extra` arrives as a JSON object; ClickHouse stores it as its JSON text in a String column
    -- (input_format_json_read_objects_as_strings, on by default).
    `extra`       String DEFAULT '{}',
    `exception`   String DEFAULT '',
    -- Your `extraFields`, one column each, for example:
    `environment` LowCardinality(String) DEFAULT '',
    `version`     LowCardinality(String) DEFAULT '',
    -- Added by Vector's http_server source.
    `source_type` LowCardinality(String) DEFAULT '',
    `path`        String DEFAULT ''
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(`timestamp`)
ORDER BY (`project`, `table`, `level_num`, `timestamp`);

-- With `idField: 'event_id'` (a stable id per record, for at-least-once delivery), let ClickHouse
-- drop the duplicates a resend can make:
--   `event_id` UUID,  ...  ENGINE = ReplacingMergeTree ORDER BY (`project`, `table`, `event_id`)
