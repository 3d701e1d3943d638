"""Profit-weighted prioritized experience replay for the RL trainer, served from PostgreSQL.

* ``buffer.ProfitWeightedExperienceBuffer`` — the database-backed buffer (sample, write back).
* ``batch`` — the sampled batch, importance weights and the beta schedule.
* ``states`` — turning input packages into state tensors for the agent.

The in-memory sum tree the database sampler is measured against lives with its benchmark
(``bench/sumtree.py``).
"""
