-- steering_sweep: trait expression and coherence per steering coefficient x layers.
--
-- One row per (run, trait, steering mode, vector, layers, coef, judge model) over generations: the mean
-- trait score (judgments whose metric is the generation's trait), the mean coherence score (metric
-- 'coherence'), n_generations, n_valid (generations with a trait score), the null rate of trait scores
-- (invalid or missing judgments) and n_coherence (generations with a coherence score). The steering
-- settings come from generations.steering JSON {mode, vector_id, layers, coef, positions}; unsteered
-- generations (steering null) appear as coef 0 with mode and layers 'none'.
--
-- Usage: pvdata sql --file warehouse/queries/steering_sweep.sql
WITH gens AS (
    SELECT
        g.run_id,
        g.generation_id,
        g.trait,
        coalesce(g.steering ->> 'mode', 'none') AS mode,
        g.steering ->> 'vector_id' AS vector_id,
        coalesce(CAST(json_extract(g.steering, '$.layers') AS VARCHAR), 'none') AS layers,
        coalesce(TRY_CAST(g.steering ->> 'coef' AS DOUBLE), 0.0) AS coef
    FROM generations AS g
),
scored AS (
    SELECT
        gens.run_id,
        gens.generation_id,
        gens.trait,
        gens.mode,
        gens.vector_id,
        gens.layers,
        gens.coef,
        j.judge_model,
        avg(j.score) FILTER (WHERE j.metric = gens.trait) AS trait_score,
        avg(j.score) FILTER (WHERE j.metric = 'coherence') AS coherence
    FROM gens
    LEFT JOIN judgments AS j
        ON j.generation_id = gens.generation_id AND (j.metric = gens.trait OR j.metric = 'coherence')
    GROUP BY ALL
)
SELECT
    run_id,
    trait,
    mode,
    vector_id,
    layers,
    coef,
    judge_model,
    count(*) AS n_generations,
    avg(trait_score) AS trait_mean,
    avg(coherence) AS coherence_mean,
    count(trait_score) AS n_valid,
    1.0 - count(trait_score) / count(*) AS trait_null_rate,
    count(coherence) AS n_coherence
FROM scored
GROUP BY ALL
ORDER BY trait, run_id, vector_id, layers, coef, judge_model;
