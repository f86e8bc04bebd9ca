"""Where the data comes from: envs built with the expert's recipe, teachers loaded safely, hub ids,
rollout collection and the teacher-labelled replay buffer."""
