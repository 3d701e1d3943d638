"""Profit-weighted prioritized experience replay for the RL trainer, served from PostgreSQL.

* ``buffer.ProfitWeightedExperienceBuffer`` — the database-backed buffer (sample, write back).
* ``batch`` — the sampled batch, importance weights and the beta schedule.
* ``sumtree`` — an in-memory sum-tree buffer: the reference the database sampler is measured against.
* ``states`` — turning input packages into state tensors for the agent.
"""
