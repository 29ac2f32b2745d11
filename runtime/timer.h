// Wall-clock timing: a steady-clock Timer, and a Profile that sums named sections
// (ScopedTimer adds the time of its scope), for the per-step breakdown in the logs.
// Not thread-safe: use one Profile per thread (the trainer times from its main thread).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace coconut {

class Timer {
 public:
  Timer() { start(); }
  void start() { t0_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }
  double ms() const { return seconds() * 1e3; }

 private:
  std::chrono::steady_clock::time_point t0_;
};

class Profile {
 public:
  struct Entry {
    double seconds = 0;
    long count = 0;
  };

  void add(const std::string& name, double seconds) {
    Entry& e = entries_[name];
    e.seconds += seconds;
    e.count += 1;
  }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  double seconds(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? 0.0 : it->second.seconds;
  }
  void clear() { entries_.clear(); }

  // One line per section, largest total first: "name  12.345 ms  (n=10)".
  std::string report() const {
    std::vector<std::pair<std::string, Entry>> rows(entries_.begin(), entries_.end());
    std::stable_sort(rows.begin(), rows.end(),
                     [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    std::string out;
    for (const auto& [name, e] : rows)
      out += fmt::format("{:<24} {:10.3f} ms  (n={})\n", name, e.seconds * 1e3, e.count);
    return out;
  }

 private:
  std::map<std::string, Entry> entries_;
};

// Adds the lifetime of this object to profile[name].
class ScopedTimer {
 public:
  ScopedTimer(Profile& profile, std::string name) : profile_(profile), name_(std::move(name)) {}
  ~ScopedTimer() { profile_.add(name_, timer_.seconds()); }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  Profile& profile_;
  std::string name_;
  Timer timer_;
};

}  // namespace coconut
