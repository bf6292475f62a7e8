#include "runtime/container/oci_spec.hpp"

#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <unistd.h>

#include "runtime/container/detail/subprocess.hpp"
#include "runtime/errc.hpp"

namespace shoal::container {

namespace {

/// A minimal streaming JSON writer: it tracks whether a comma is due at each nesting level.
/// Objects and arrays are opened and closed explicitly; keys and values are escaped.
class json_writer {
public:
  void begin_object() { open('{'); }
  void end_object() { close('}'); }
  void begin_array() { open('['); }
  void end_array() { close(']'); }

  void key(std::string_view name) {
    separate();
    out_ += json_quote(name);
    out_ += ": ";
    after_key_ = true;
  }
  void value(std::string_view text) {
    separate();
    out_ += json_quote(text);
  }
  void value(const char* text) { value(std::string_view{text}); }
  void value(const std::string& text) { value(std::string_view{text}); }
  void value(bool flag) {
    separate();
    out_ += flag ? "true" : "false";
  }
  void value(int64_t number) {
    separate();
    out_ += std::to_string(number);
  }
  void value(uint64_t number) {
    separate();
    out_ += std::to_string(number);
  }

  template <class T>
  void field(std::string_view name, const T& v) {
    key(name);
    value(v);
  }
  void string_array(std::string_view name, const std::vector<std::string>& items) {
    key(name);
    begin_array();
    for (const auto& item : items)
      value(item);
    end_array();
  }

  std::string take() {
    out_ += '\n';
    return std::move(out_);
  }

private:
  void open(char c) {
    separate();
    out_ += c;
    first_.push_back(true);
  }
  void close(char c) {
    bool empty = first_.back();
    first_.pop_back();
    if (!empty)
      newline();
    out_ += c;
  }
  /// Emits the comma and indentation before a new element (not after a key).
  void separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (first_.empty())
      return;
    if (!first_.back())
      out_ += ',';
    first_.back() = false;
    newline();
  }
  void newline() {
    out_ += '\n';
    out_.append(2 * first_.size(), ' ');
  }

  std::string out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 128)
    return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(id[0]))
    return false;
  for (char c : id)
    if (!alnum(c) && c != '_' && c != '.' && c != '-')
      return false;
  return true;
}

caf::error invalid(std::string message) {
  return make_error(errc::invalid_argument, std::move(message));
}

void write_device_rule(json_writer& w, bool allow, std::string_view type, int64_t major,
                       int64_t minor, std::string_view access) {
  w.begin_object();
  w.field("allow", allow);
  if (!type.empty())
    w.field("type", type);
  if (major >= 0)
    w.field("major", major);
  if (minor >= 0)
    w.field("minor", minor);
  w.field("access", access);
  w.end_object();
}

} // namespace

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c & 0xff));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string cgroups_path_for(std::string_view id) {
  return "/shoal/" + std::string{id};
}

std::vector<mount_spec> standard_mounts(uint64_t tmp_size_bytes) {
  std::vector<mount_spec> mounts = {
    {"/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}},
    {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}},
    {"/dev/pts",
     "devpts",
     "devpts",
     {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
    {"/dev/shm", "shm", "tmpfs", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
    {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}},
    {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}},
    {"/tmp", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=1777"}},
  };
  if (tmp_size_bytes > 0)
    mounts.back().options.push_back("size=" + std::to_string(tmp_size_bytes));
  return mounts;
}

mount_spec code_mount(const std::string& host_dir) {
  return {"/shoal/code", host_dir, "bind", {"rbind", "ro", "nosuid", "nodev"}};
}

mount_spec guest_mount(const std::string& host_dir) {
  return {"/shoal/guest", host_dir, "bind", {"rbind", "rw", "nosuid", "nodev", "noexec"}};
}

caf::error validate(const container_spec& spec) {
  if (!valid_id(spec.id))
    return invalid("container id '" + spec.id
                   + "' must be 1-128 characters of [A-Za-z0-9_.-] starting with a letter or digit");
  if (spec.rootfs.empty())
    return invalid("container " + spec.id + ": rootfs must not be empty");
  if (spec.args.empty() || spec.args[0].empty())
    return invalid("container " + spec.id + ": args must name the program to run");
  for (const auto& e : spec.env) {
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0)
      return invalid("container " + spec.id + ": env entries must be KEY=VALUE");
  }
  if (spec.cwd.empty() || spec.cwd[0] != '/')
    return invalid("container " + spec.id + ": cwd '" + spec.cwd + "' must be absolute");
  for (const auto& m : spec.mounts) {
    if (m.destination.empty() || m.destination[0] != '/')
      return invalid("container " + spec.id + ": mount destination '" + m.destination
                     + "' must be absolute");
    if (m.type.empty())
      return invalid("container " + spec.id + ": mount at " + m.destination + " has no type");
  }
  if (spec.limits.cpu_millis > 0) {
    if (spec.limits.cpu_period_us < 1000 || spec.limits.cpu_period_us > 1'000'000)
      return invalid("container " + spec.id + ": cpu_period_us must be within 1000..1000000");
    auto quota = spec.limits.cpu_period_us * spec.limits.cpu_millis / 1000;
    if (quota < 1000)
      return invalid("container " + spec.id + ": cpu_millis "
                     + std::to_string(spec.limits.cpu_millis)
                     + " gives a CFS quota below the kernel's 1 ms minimum");
  }
  if (spec.limits.pids_max < 0)
    return invalid("container " + spec.id + ": pids_max must not be negative");
  if (!spec.cgroups_path.empty() && spec.cgroups_path.find("..") != std::string::npos)
    return invalid("container " + spec.id + ": cgroups_path must not contain '..'");
  return {};
}

std::string to_oci_json(const container_spec& spec) {
  json_writer w;
  w.begin_object();
  w.field("ociVersion", "1.0.2");

  w.key("process");
  w.begin_object();
  w.field("terminal", false);
  w.key("user");
  w.begin_object();
  w.field("uid", uint64_t{spec.uid});
  w.field("gid", uint64_t{spec.gid});
  if (!spec.additional_gids.empty()) {
    w.key("additionalGids");
    w.begin_array();
    for (auto gid : spec.additional_gids)
      w.value(uint64_t{gid});
    w.end_array();
  }
  w.end_object();
  w.string_array("args", spec.args);
  w.string_array("env", spec.env);
  w.field("cwd", spec.cwd);
  w.key("capabilities");
  w.begin_object();
  for (auto set : {"bounding", "effective", "inheritable", "permitted", "ambient"})
    w.string_array(set, spec.capabilities);
  w.end_object();
  if (spec.open_files_max > 0) {
    w.key("rlimits");
    w.begin_array();
    w.begin_object();
    w.field("type", "RLIMIT_NOFILE");
    w.field("hard", spec.open_files_max);
    w.field("soft", spec.open_files_max);
    w.end_object();
    w.end_array();
  }
  w.field("noNewPrivileges", spec.no_new_privileges);
  w.end_object();

  w.key("root");
  w.begin_object();
  w.field("path", spec.rootfs);
  w.field("readonly", spec.rootfs_readonly);
  w.end_object();

  if (!spec.hostname.empty())
    w.field("hostname", spec.hostname);

  w.key("mounts");
  w.begin_array();
  for (const auto& m : spec.mounts) {
    w.begin_object();
    w.field("destination", m.destination);
    w.field("type", m.type);
    w.field("source", m.source);
    if (!m.options.empty())
      w.string_array("options", m.options);
    w.end_object();
  }
  w.end_array();

  w.key("linux");
  w.begin_object();
  if (!spec.cgroups_path.empty())
    w.field("cgroupsPath", spec.cgroups_path);
  w.key("resources");
  w.begin_object();
  // Deny every device, then allow the ones a process expects (crun creates the same nodes).
  w.key("devices");
  w.begin_array();
  write_device_rule(w, false, "", -1, -1, "rwm");
  write_device_rule(w, true, "c", 1, 3, "rwm");   // null
  write_device_rule(w, true, "c", 1, 5, "rwm");   // zero
  write_device_rule(w, true, "c", 1, 7, "rwm");   // full
  write_device_rule(w, true, "c", 1, 8, "rwm");   // random
  write_device_rule(w, true, "c", 1, 9, "rwm");   // urandom
  write_device_rule(w, true, "c", 5, 0, "rwm");   // tty
  write_device_rule(w, true, "c", 5, 2, "rwm");   // ptmx
  write_device_rule(w, true, "c", 136, -1, "rwm"); // pts/*
  w.end_array();
  if (spec.limits.memory_bytes > 0) {
    w.key("memory");
    w.begin_object();
    w.field("limit", spec.limits.memory_bytes);
    w.field("swap", spec.limits.memory_bytes);
    w.end_object();
  }
  if (spec.limits.cpu_millis > 0) {
    w.key("cpu");
    w.begin_object();
    w.field("quota", spec.limits.cpu_period_us * spec.limits.cpu_millis / 1000);
    w.field("period", spec.limits.cpu_period_us);
    w.end_object();
  }
  if (spec.limits.pids_max > 0) {
    w.key("pids");
    w.begin_object();
    w.field("limit", spec.limits.pids_max);
    w.end_object();
  }
  w.end_object(); // resources
  w.key("namespaces");
  w.begin_array();
  for (const auto& ns : spec.namespaces) {
    w.begin_object();
    w.field("type", ns);
    w.end_object();
  }
  w.end_array();
  w.string_array("maskedPaths",
                 {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                  "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                  "/proc/sched_debug", "/proc/scsi", "/sys/firmware"});
  w.string_array("readonlyPaths",
                 {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"});
  w.end_object(); // linux

  w.end_object();
  return w.take();
}

caf::error write_bundle_config(const std::string& bundle_dir, const container_spec& spec) {
  if (auto err = validate(spec))
    return err;
  auto target = bundle_dir + "/config.json";
  auto tmp = target + ".tmp";
  auto text = to_oci_json(spec);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_error(errc::storage_failure,
                      "cannot write " + tmp + ": " + detail::errno_text(errno));
  size_t done = 0;
  while (done < text.size()) {
    auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return make_error(errc::storage_failure,
                        "cannot write " + tmp + ": " + detail::errno_text(err));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return make_error(errc::storage_failure, "cannot rename " + tmp + " to " + target + ": "
                                               + detail::errno_text(err));
  }
  return {};
}

} // namespace shoal::container
