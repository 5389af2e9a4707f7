-- shift_prediction: per experiment dataset, the pre-finetune screening means next to the post-finetune
-- shift, with Pearson r per (experiment run, trait) for each screening method.
--
-- One row per dataset of every `pvdata experiment` run (experiment_points): its composition (kind,
-- fraction of trait answers, or for `filter` the share dropped and by which method), the dataset-level
-- projection difference (exact and prompt_last approximation), the raw projection, the finetuning shift
-- and the judged trait score when a judge was given. r_exact / r_approx / r_raw are corr(method, shift)
-- over the run's datasets of that trait (bootstrap intervals and Spearman r: experiment_stats).
--
-- Usage: pvdata sql --file warehouse/queries/shift_prediction.sql
SELECT
    p.run_id,
    p.experiment,
    p.trait,
    p.dataset,
    p.kind,
    p.fraction,
    p.method,
    p.seed,
    p.n_records,
    p.n_trait,
    p.layer,
    p.projection_difference_exact,
    p.projection_difference_approx,
    p.raw_projection,
    p.shift,
    p.judged_score,
    corr(p.projection_difference_exact, p.shift) OVER w AS r_exact,
    corr(p.projection_difference_approx, p.shift) OVER w AS r_approx,
    corr(p.raw_projection, p.shift) OVER w AS r_raw,
    count(*) OVER w AS n_datasets,
    p.train_run_id
FROM experiment_points AS p
WINDOW w AS (PARTITION BY p.run_id, p.trait)
ORDER BY p.run_id, p.trait, p.kind, p.fraction, p.method, p.seed
