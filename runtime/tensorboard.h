// TensorBoard event files: scalars written as TensorFlow Event protobufs in TFRecord
// framing, so that `tensorboard --logdir DIR` shows them. No TensorFlow dependency:
// the schema subset is runtime/tensorboard_event.proto.
//
// File: DIR/events.out.tfevents.<unix time>.<hostname> (a ".N" suffix when that name
// exists). Record framing: uint64 length (little endian), masked CRC-32C of those 8
// bytes, the serialized Event, masked CRC-32C of the Event. The first record carries
// file_version "brain.Event:2".
//
// Scalars are buffered; flush() after each batch of scalars (e.g. once per step) so a
// crashed run keeps everything logged up to its last flush. Not thread-safe.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace coconut {

class TensorBoardWriter {
 public:
  // Creates dir (and parents) and the event file; throws coconut::Error naming the path.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();  // flushes and closes; errors there are logged, not thrown
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One scalar: the tag's value at a step (the x axis in TensorBoard). Stored as float32,
  // as TensorBoard's simple_value is. wall_time: seconds since the Unix epoch.
  void scalar(const std::string& tag, int64_t step, double value, double wall_time = now());

  // Pushes buffered records to the file (fflush); throws on a write error.
  void flush();

  const std::string& path() const { return path_; }

  // Current time as seconds since the Unix epoch (TensorBoard's wall_time).
  static double now();

 private:
  void write_record(const std::string& data);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace coconut
