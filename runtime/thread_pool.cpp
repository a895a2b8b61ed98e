// Fork-join with a short spin: see thread_pool.h for why.
#include "thread_pool.h"

#include <chrono>

using namespace lathe::rt;

ThreadPool::ThreadPool(unsigned threads) {
  for (unsigned i = 1; i < threads; ++i)
    workers_.emplace_back([this, i] { work(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (std::thread &t : workers_)
    t.join();
}

void ThreadPool::run(const std::function<void(unsigned)> &job) {
  if (workers_.empty()) {
    job(0);
    return;
  }
  job_ = &job;
  pending_.store(unsigned(workers_.size()));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  job(0);
  while (pending_.load(std::memory_order_acquire) != 0)
    std::this_thread::yield();
}

void ThreadPool::work(unsigned index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for a while: the next partitioned kernel usually follows within
    // microseconds.
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
    while (generation_.load(std::memory_order_acquire) == seen &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_)
      return;
    (*job_)(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}
