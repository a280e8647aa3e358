"""Your own text environment in the agent search, through the gymnasium adapter.

    python examples/agent_gymnasium.py

Defines a tiny gymnasium environment ("find the key, open the door": the key lies in one of two
rooms, chosen by the reset seed), plugs it in with :class:`GymnasiumGame` in one line, and walks
through what the search does with it: tasks, the prompt a model sees, ReAct turns (one rejected),
branching from a shared state, and the replay check that a dialogue really happens in the game.
"""

from __future__ import annotations

import gymnasium
from gymnasium import spaces

from environments.agent.base import AgentEnvironment
from environments.agent.gymnasium_game import GymnasiumGame


class KeyDoorEnv(gymnasium.Env):
    """Three rooms; the key is in the kitchen or the bedroom; the garden door in the hall opens
    with it. Text observations, Discrete actions named by ``ACTIONS``."""

    ACTIONS = ("go to hall", "go to kitchen", "go to bedroom", "take key", "open door", "look")
    ROOMS = ("hall", "kitchen", "bedroom")

    def __init__(self, max_steps: int = 12) -> None:
        self.action_space = spaces.Discrete(len(self.ACTIONS))
        self.observation_space = spaces.Text(max_length=500)
        self.max_steps = max_steps

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.room, self.has_key, self.steps = "hall", False, 0
        self.key_room = ("kitchen", "bedroom")[int(self.np_random.integers(2))]
        return self._look(), {"goal": "Open the garden door. You need a key."}

    def step(self, action: int):
        self.steps += 1
        name, reward, terminated = self.ACTIONS[action], 0.0, False
        if name.startswith("go to "):
            self.room = name.removeprefix("go to ")
            text = f"You walk to the {self.room}. {self._look()}"
        elif name == "take key":
            if self.room == self.key_room and not self.has_key:
                self.has_key, text = True, "You take the key."
            else:
                text = "There is no key here."
        elif name == "open door":
            if self.room != "hall":
                text = "There is no door here."
            elif not self.has_key:
                text = "The door is locked."
            else:
                text, reward, terminated = "The door opens onto the garden. You win!", 1.0, True
        else:
            text = self._look()
        truncated = not terminated and self.steps >= self.max_steps
        return text, reward, terminated, truncated, {"won": terminated}

    def _look(self) -> str:
        things = ["a locked door to the garden"] if self.room == "hall" else []
        if self.room == self.key_room and not self.has_key:
            things.append("a key")
        seen = ", ".join(things) or "nothing special"
        carrying = " You carry a key." if self.has_key else ""
        return f"You are in the {self.room}. You see {seen}.{carrying}"


def main() -> None:
    # The whole plug-in: a factory and the names of its actions.
    game = GymnasiumGame(KeyDoorEnv, name="keydoor", action_names=KeyDoorEnv.ACTIONS)
    env = AgentEnvironment(game, max_history=8)
    tasks = env.tasks(2, split="test", seed=0)
    print(f"tasks: {[t.id for t in tasks]}; problem: {tasks[0].problem!r}")

    task = tasks[0]
    state = env.reset(task)
    print("\n--- the prompt a model sees at the root ---")
    for message in env.prompt(state):
        print(f"[{message['role']}] {message['content']}")

    replies = ["Thought: start by looking around. Action: look",
               "Action: fly away",  # not a valid action: rejected, never sent to the game
               ]
    for reply in replies:
        state = env.step(state, reply).state
        turn = state.turns[-1]
        print(f"\n> {reply}\n  sent: {turn.action!r}\n  seen: {turn.observation}")

    # Branch: two continuations of the same state, as the tree search expands them.
    branches = {room: env.step(state, f"Thought: search the {room}. Action: go to {room}").state
                for room in ("kitchen", "bedroom")}
    for room, branch in branches.items():
        print(f"\nbranch {room}: {branch.turns[-1].observation}")
    room, best = next((r, b) for r, b in branches.items() if "a key" in b.current.observation)
    for command in ("take key", "go to hall", "open door"):
        best = env.step(best, f"Action: {command}").state
    print(f"\nthe {room} branch goes on: {list(best.commands)} -> won={best.won}, "
          f"score={env.score(best, task)}")

    # The check behind every saved dialogue: replay the commands in a fresh game, no caches.
    replayed = env.replay(task, best.commands)
    seen = [t.observation for t in best.turns if t.action is not None]
    same = seen == [t.observation for t in replayed[1:]] and replayed[-1].won
    print(f"replay from reset matches the search's states: {same} "
          f"({len(replayed) - 1} commands, {env.simulated_steps} simulated steps, "
          f"{env.pool.copies} snapshot copies)")
    assert same and best.won


if __name__ == "__main__":
    main()
