-- screen_vs_score: per screened sample, projection difference, raw projection and judged trait score.
--
-- One row per (screen run, trait, layer, method, judge model, sample): the screening score (the
-- projection difference for exact and prompt_last_approx, the raw projection for raw), the raw
-- projection of the training answer, the judged trait score of the training answer and, for exact, the
-- judged score of the (first) base answer it was compared with; r is the Pearson correlation of the
-- score with the training answer's judged score over the whole (run, trait, layer, method, judge) group
-- (repeated on its rows). Needs `pvdata judge --screen RUN --judge J` first; samples without a valid
-- judgment are left out. Reads the default views: succeeded runs only.
--
-- Usage: pvdata sql --file warehouse/queries/screen_vs_score.sql
WITH scored AS (
    SELECT
        c.run_id,
        c.trait,
        c.layer,
        c.method,
        c.sample_id,
        c.dataset_id,
        c.flagged,
        CASE WHEN c.method = 'raw' THEN NULL ELSE c.score END AS projection_difference,
        c.proj_train AS raw_projection,
        c.base_generation_id,
        j.judge_model,
        j.score AS judged_score
    FROM screenings AS c
    JOIN judgments AS j ON j.generation_id = c.sample_id AND j.metric = c.trait
    WHERE j.score IS NOT NULL
)
SELECT
    s.run_id,
    s.trait,
    s.layer,
    s.method,
    s.judge_model,
    s.sample_id,
    m.line,
    s.flagged,
    s.projection_difference,
    s.raw_projection,
    s.judged_score,
    b.score AS base_judged_score,
    corr(CASE WHEN s.method = 'raw' THEN s.raw_projection ELSE s.projection_difference END, s.judged_score)
        OVER (PARTITION BY s.run_id, s.trait, s.layer, s.method, s.judge_model) AS r,
    count(*) OVER (PARTITION BY s.run_id, s.trait, s.layer, s.method, s.judge_model) AS n
FROM scored AS s
JOIN samples AS m ON m.sample_id = s.sample_id AND m.dataset_id = s.dataset_id
LEFT JOIN judgments AS b
    ON b.generation_id = s.base_generation_id AND b.metric = s.trait AND b.judge_model = s.judge_model
ORDER BY s.trait, s.run_id, s.layer, s.method, s.judge_model, m.line;
