// The cpu device's threads: run a partitioned kernel's parts at once.
#ifndef LATHE_RUNTIME_THREAD_POOL_H
#define LATHE_RUNTIME_THREAD_POOL_H

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lathe::rt {

// Fork-join over `size()` threads, the caller being thread 0. Workers spin
// briefly after a job (kernels come back to back, microseconds apart) and
// then sleep, so they leave the cores to the BLAS between partitioned
// kernels. Not thread-safe: one session drives it.
class ThreadPool {
public:
  explicit ThreadPool(unsigned threads);
  ~ThreadPool();
  unsigned size() const { return unsigned(workers_.size()) + 1; }
  // Runs job(0) .. job(size() - 1), each on its own thread; returns when all
  // are done.
  void run(const std::function<void(unsigned)> &job);

private:
  void work(unsigned index);

  std::vector<std::thread> workers_;
  const std::function<void(unsigned)> *job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<unsigned> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

} // namespace lathe::rt

#endif // LATHE_RUNTIME_THREAD_POOL_H
