"""Facts about the simulated tasks that the closed-loop supervisor needs without importing MuJoCo
(`memorywam-demo` runs the simulator in another process): what an episode's highest reward stage
means, and Look-and-Press's default cue timing (sim/look_and_press.py uses the same numbers)."""

from __future__ import annotations

__all__ = ["LOOK_AND_PRESS_TIMING", "MAX_REWARD", "REWARD_STAGES"]

MAX_REWARD = 4  # both gym-aloha tasks: reward == 4 is success (`info["is_success"]`)

REWARD_STAGES: dict[str, tuple[str, ...]] = {
    # gym-aloha's TransferCubeTask.get_reward: 1 right gripper touches the cube, 2 it is lifted off the
    # table, 3 the left gripper touches it, 4 the left gripper holds it off the table, the right lets go
    "transfer_cube": ("never touched the cube", "touched, never lifted (grasp failed)",
                      "lifted, left gripper never touched it (no hand-over)",
                      "left gripper touched it, not transferred (hand-over failed)", "success"),
    # InsertionTask: 1 both grippers touch (peg and socket), 2 both lifted, 3 peg touches the socket in
    # the air, 4 the peg touches the pin (inserted)
    "insertion": ("did not touch both", "both touched, not both lifted", "both lifted, peg never touched the socket",
                  "peg touched the socket, not inserted", "success"),
    # look_and_press (sim/look_and_press.py, from latched flags): 1 only the wrong button touched, 2 the cued
    # one touched but never held 0.3 s, 3 the cued one pressed but the other touched too, 4 success
    "look_and_press": ("touched no button", "touched the wrong button only",
                       "touched the cued button, never held it 0.3 s",
                       "pressed the cued button, but touched the other too", "success"),
}
"""What each highest reward reached in an episode means: the failure breakdown of closed-loop runs."""

LOOK_AND_PRESS_TIMING: dict[str, int] = {"cue_start": 2, "cue_frames": 2, "delay_chunks": 22}
"""Look-and-Press's default cue timing in latent frames / chunks of 1.6 s: the panel lights in frames
2-3 (after the 2 anchor frames: only gists can carry it), the demonstrations wait 22 chunks in the
dark, then press (chunk 26, ~42 s in). 22, not the first timing's 5: at 5 dark chunks `window` and
`no_gist` pressed the cued button 50/50 too, because the streaming VAE's causal memory (~21 frames)
still carried the cue into the latents the window holds (README "Look-and-Press"). The shipped
checkpoint (checkpoints/sim_look_and_press) is trained with it."""
