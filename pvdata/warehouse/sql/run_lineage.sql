-- run_lineage: every run with the chain of runs it was derived from.
--
-- Walks runs.parent_run_ids from the root runs (no parents) down to their descendants. One row per
-- (root, path): depth (0 for a root), the run with its kind, status, model and times, its direct
-- parents, and the path from the root as 'root > child > ...'. A run with two parents appears under
-- each root it descends from. Reads the runs view: the latest status of every run, failed ones too.
--
-- Usage: pvdata sql --file warehouse/queries/run_lineage.sql
WITH RECURSIVE
edges AS (
    SELECT unnest(parent_run_ids) AS parent_run_id, run_id AS child_run_id
    FROM runs
),
lineage(root_run_id, run_id, depth, path) AS (
    SELECT run_id, run_id, 0, [run_id]
    FROM runs
    WHERE len(coalesce(parent_run_ids, [])) = 0
    UNION ALL
    SELECT l.root_run_id, e.child_run_id, l.depth + 1, list_append(l.path, e.child_run_id)
    FROM lineage AS l
    JOIN edges AS e ON e.parent_run_id = l.run_id
    WHERE NOT list_contains(l.path, e.child_run_id)
)
SELECT
    l.root_run_id,
    l.depth,
    l.run_id,
    r.kind,
    r.status,
    r.model_id,
    r.parent_run_ids,
    r.started_at,
    r.finished_at,
    array_to_string(l.path, ' > ') AS path
FROM lineage AS l
JOIN runs AS r ON r.run_id = l.run_id
ORDER BY l.root_run_id, path;
