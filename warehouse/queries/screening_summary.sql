-- screening_summary: how many training samples each screening flagged, and how their scores spread.
--
-- One row per (screen run, dataset, trait, vector, layer, method): n samples, n_flagged and the flagged
-- rate, the mean and p50/p90/p99/max of the screening score, and the mean projection difference
-- proj_train - proj_base (how far the training answers sit from the base model's answers along the
-- vector). Reads the default views: succeeded runs only.
--
-- Usage: pvdata sql --file warehouse/queries/screening_summary.sql
SELECT
    run_id,
    dataset_id,
    trait,
    vector_id,
    layer,
    method,
    count(*) AS n,
    count(*) FILTER (WHERE flagged) AS n_flagged,
    avg(CASE WHEN flagged THEN 1.0 ELSE 0.0 END) AS flagged_rate,
    avg(score) AS score_mean,
    quantile_cont(score, 0.5) AS score_p50,
    quantile_cont(score, 0.9) AS score_p90,
    quantile_cont(score, 0.99) AS score_p99,
    max(score) AS score_max,
    avg(proj_train - proj_base) AS proj_diff_mean
FROM screenings
GROUP BY run_id, dataset_id, trait, vector_id, layer, method
ORDER BY trait, dataset_id, run_id, vector_id, layer, method;
