#include "fs/detail/io_ring.hpp"

#include <cerrno>

namespace shoal::fs::detail {

std::unique_ptr<io_ring> io_ring::make(unsigned depth, int* error) {
  if (depth == 0)
    depth = 1;
  std::unique_ptr<io_ring> r{new io_ring(depth)};
  io_uring_params params{};
  params.flags = IORING_SETUP_CQSIZE;
  params.cq_entries = depth * 2;
  int rc = io_uring_queue_init_params(depth, &r->ring_, &params);
  if (rc < 0) {
    if (error != nullptr)
      *error = -rc;
    return nullptr; // the destructor skips io_uring_queue_exit: initialized_ is false
  }
  r->initialized_ = true;
  return r;
}

io_ring::~io_ring() {
  if (!initialized_)
    return;
  drain();
  io_uring_queue_exit(&ring_);
}

io_op& io_ring::add(io_group& g, const io_op& op) {
  auto& stored = g.ops.emplace_back(op);
  stored.group = &g;
  stored.done = 0;
  ++g.outstanding;
  if (stored.len == 0 && stored.kind != io_kind::sync_range) {
    --g.outstanding; // nothing to transfer
    return stored;
  }
  backlog_.push_back(&stored);
  return stored;
}

unsigned io_ring::fill_sq() {
  unsigned prepared = 0;
  while (inflight_ < depth_ && !backlog_.empty()) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr)
      break;
    io_op* op = backlog_.front();
    backlog_.pop_front();
    switch (op->kind) {
      case io_kind::read:
        io_uring_prep_read(sqe, op->fd, op->buf + op->done, op->len - op->done,
                           op->offset + op->done);
        break;
      case io_kind::write:
        io_uring_prep_write(sqe, op->fd, op->buf + op->done, op->len - op->done,
                            op->offset + op->done);
        break;
      case io_kind::sync_range:
        io_uring_prep_sync_file_range(sqe, op->fd, op->len, op->offset, SYNC_FILE_RANGE_WRITE);
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    ++inflight_;
    ++prepared;
  }
  return prepared;
}

void io_ring::submit_and_wait(unsigned wait_nr) {
  for (int attempt = 0;; ++attempt) {
    int rc = io_uring_submit_and_wait(&ring_, wait_nr);
    if (rc >= 0)
      return;
    if ((rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) && attempt < 1000) {
      if (rc != -EINTR)
        reap(); // make room in the completion queue
      continue;
    }
    broken_ = true;
    return;
  }
}

void io_ring::kick() {
  if (broken_)
    return;
  if (fill_sq() > 0)
    submit_and_wait(0);
}

void io_ring::complete(io_op* op, int res) {
  io_group& g = *op->group;
  if (res == -EAGAIN || res == -EINTR) {
    backlog_.push_front(op); // retry
    return;
  }
  if (res < 0) {
    if (g.error == 0) {
      g.error = -res;
      g.failed = op;
    }
    --g.outstanding;
    return;
  }
  if (op->kind == io_kind::sync_range) {
    --g.outstanding;
    return;
  }
  uint32_t need = op->need != 0 ? op->need : op->len;
  if (res == 0) {
    if (op->kind == io_kind::read && op->done >= need) {
      --g.outstanding; // the file ended after everything we need
      return;
    }
    if (op->kind == io_kind::read) {
      if (!g.short_read && g.error == 0)
        g.failed = op;
      g.short_read = true;
    } else if (g.error == 0) {
      g.error = EIO;
      g.failed = op;
    }
    --g.outstanding;
    return;
  }
  op->done += static_cast<uint32_t>(res);
  if (op->done < (op->kind == io_kind::read ? need : op->len)) {
    backlog_.push_front(op); // short transfer: the rest goes again
    return;
  }
  --g.outstanding;
}

void io_ring::reap() {
  io_uring_cqe* cqe = nullptr;
  unsigned head = 0;
  unsigned seen = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    auto* op = static_cast<io_op*>(io_uring_cqe_get_data(cqe));
    --inflight_;
    ++seen;
    complete(op, cqe->res);
  }
  io_uring_cq_advance(&ring_, seen);
}

void io_ring::wait(io_group& g) {
  reap();
  while (g.outstanding > 0 && !broken_) {
    // Completions may have queued retries (short transfers, EAGAIN): push them before waiting,
    // and never wait with nothing in flight.
    fill_sq();
    if (inflight_ == 0)
      break; // nothing queued can complete this group: reported below
    submit_and_wait(1);
    reap();
  }
  if (g.outstanding > 0 && g.error == 0) {
    g.error = EIO;
    g.failed = nullptr;
  }
}

void io_ring::drain() {
  if (!initialized_)
    return;
  reap();
  while ((inflight_ > 0 || !backlog_.empty()) && !broken_) {
    fill_sq();
    if (inflight_ == 0)
      break;
    submit_and_wait(1);
    reap();
  }
  backlog_.clear();
}

} // namespace shoal::fs::detail
