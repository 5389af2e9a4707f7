-- projection_vs_score: does the projection on a persona vector track the judge's trait score?
--
-- One row per (projection run, trait, layer, vector, projection kind, judge model): the Pearson
-- correlation r between projections.value and judgments.score over the generations that have both,
-- with n (pairs), and the mean projection and mean score over those pairs. Joins projections.source_id
-- to judgments.generation_id, and keeps the judgments whose metric is the vector's trait (from vectors).
-- Null scores (invalid judgments) and null projections are left out (the regr_* aggregates count only
-- pairs where both are set; a WHERE on p.value made this query 3x slower).
-- A screened dataset whose training answers were judged (`pvdata judge --screen RUN`) also gets one
-- row per (screen run, trait, layer, method, judge model) with kind 'screening <method>': r between
-- the screening score (the projection difference for exact and prompt_last_approx, the raw projection
-- for raw) and the judged trait score of the training answer. Per-sample rows: screen_vs_score.sql.
-- Reads the default views: succeeded runs only.
--
-- Usage: pvdata sql --file warehouse/queries/projection_vs_score.sql
WITH vector_traits AS (
    SELECT DISTINCT vector_id, trait FROM vectors
)
SELECT
    p.run_id,
    v.trait,
    p.layer,
    p.vector_id,
    p.kind,
    j.judge_model,
    regr_count(j.score, p.value) AS n,
    corr(p.value, j.score) AS r,
    regr_avgx(j.score, p.value) AS mean_projection,
    regr_avgy(j.score, p.value) AS mean_score
FROM projections AS p
JOIN vector_traits AS v ON v.vector_id = p.vector_id
JOIN judgments AS j ON j.generation_id = p.source_id AND j.metric = v.trait
WHERE j.score IS NOT NULL
GROUP BY p.run_id, v.trait, p.layer, p.vector_id, p.kind, j.judge_model
UNION ALL
SELECT
    c.run_id,
    c.trait,
    c.layer,
    c.vector_id,
    'screening ' || c.method AS kind,
    j.judge_model,
    regr_count(j.score, c.value) AS n,
    corr(c.value, j.score) AS r,
    regr_avgx(j.score, c.value) AS mean_projection,
    regr_avgy(j.score, c.value) AS mean_score
FROM (
    SELECT *, CASE WHEN method = 'raw' THEN proj_train ELSE score END AS value FROM screenings
) AS c
JOIN judgments AS j ON j.generation_id = c.sample_id AND j.metric = c.trait
WHERE j.score IS NOT NULL
GROUP BY c.run_id, c.trait, c.layer, c.vector_id, c.method, j.judge_model
ORDER BY trait, run_id, vector_id, kind, layer, judge_model;
