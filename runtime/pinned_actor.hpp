#pragma once
/// Actors pinned to one thread that is not a CAF worker: `pinned<Base>` runs every turn of the
/// actor on a `pinned_unit` (an execution unit the owning thread drives), so messages between
/// that thread and the actor, and between actors pinned to the same unit, never cross threads.
///
/// Why: the queue broker and its storage writer are pinned to the RPC server's kj thread
/// (kj_execution_unit.hpp). A queue put or get then goes request decode → broker → writer
/// (WAL append + fdatasync) → reply on one thread, as in Redis, instead of waking a CAF worker,
/// the writer's thread and the kj thread again: ~3 thread hand-offs per operation, each 15-40 µs
/// of latency and CPU on this VM (bench/RESULTS.md, "Queues").
///
/// How: CAF 0.17 schedules an actor that a message unblocks on the *sender's* execution unit (or
/// the scheduler); `pinned` overrides `enqueue` and `launch` to name its own unit instead, the
/// way CAF's I/O brokers stay on their multiplexer. The unit runs only the actors pinned to it;
/// any other actor it is handed (a receiver unblocked by a pinned sender) goes to CAF's
/// scheduler. When the unit is closed (its thread is ending) it hands everything to CAF's
/// scheduler: pinned actors then run on workers like any other actor until they exit.
///
/// A `pinned<Base>` with no unit is an ordinary actor (unit tests, services without an RPC server).

#include <functional>
#include <memory>
#include <utility>

#include <caf/actor_config.hpp>
#include <caf/execution_unit.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/resumable.hpp>

namespace shoal {

/// An execution unit that runs the actors pinned to it on its owner's thread.
class pinned_unit : public caf::execution_unit {
public:
  using caf::execution_unit::execution_unit;

  /// `job` runs on this unit from now on (called by `pinned`'s constructor).
  virtual void pin(caf::resumable* job) = 0;

  /// Forget `job` (called by `pinned`'s destructor).
  virtual void unpin(caf::resumable* job) = 0;

  /// Runs `f` on this unit's thread once its event loop has polled for I/O again and handled what
  /// came in, or returns false when it cannot (not on that thread, the loop gone, no loop).
  virtual bool after_io(std::function<void()> f) {
    (void)f;
    return false;
  }
};

template <class Base>
class pinned : public Base {
public:
  template <class... Ts>
  pinned(caf::actor_config& cfg, std::shared_ptr<pinned_unit> unit, Ts&&... xs)
    : Base(cfg, std::forward<Ts>(xs)...), unit_(std::move(unit)) {
    if (unit_)
      unit_->pin(this);
  }

  ~pinned() override {
    if (unit_)
      unit_->unpin(this);
  }

  void enqueue(caf::mailbox_element_ptr what, caf::execution_unit* host) override {
    Base::enqueue(std::move(what), unit_ ? unit_.get() : host);
  }

  void launch(caf::execution_unit* host, bool lazy, bool hide) override {
    Base::launch(unit_ ? unit_.get() : host, lazy, hide);
  }

private:
  std::shared_ptr<pinned_unit> unit_;
};

} // namespace shoal
