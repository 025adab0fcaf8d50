import ISCSIProtocol
import ISCSIServer
import Prometheus
import Synchronization

/// Per-target iSCSI metrics in the daemon's registry: SCSI commands by operation and result, bytes that
/// crossed the wire by direction, and bytes EXTENDED COPY moved inside the pool (which did not).
final class ISCSITargetCounters: ISCSITargetMetrics {
    let target: String
    let registry: PrometheusCollectorRegistry
    /// Command counters by (opcode, status), made on first use: a target sees a dozen opcodes at most.
    private let commands = Mutex<[UInt16: Counter]>([:])
    let dataIn: Counter
    let dataOut: Counter
    let copiedBytes: Counter

    static var commandsName: MetricNameDescriptor {
        DaemonMetrics.name("iscsi", "commands", "total", "SCSI commands answered, by target, operation and result")
    }
    static var bytesName: MetricNameDescriptor {
        DaemonMetrics.name(
            "iscsi", "data", "bytes_total",
            "SCSI data on the wire by target and direction (data_in: to the initiator, data_out: from it)")
    }
    static var copiedName: MetricNameDescriptor {
        DaemonMetrics.name("iscsi", "copy", "bytes_total", "Bytes EXTENDED COPY moved inside the pool, by destination target")
    }

    init(registry: PrometheusCollectorRegistry, target: String) {
        self.target = target
        self.registry = registry
        dataIn = registry.makeCounter(descriptor: Self.bytesName, labels: [("target", target), ("direction", "data_in")])
        dataOut = registry.makeCounter(descriptor: Self.bytesName, labels: [("target", target), ("direction", "data_out")])
        copiedBytes = registry.makeCounter(descriptor: Self.copiedName, labels: [("target", target)])
    }

    func command(opcode: UInt8, status: UInt8) {
        let key = UInt16(opcode) << 8 | UInt16(status)
        let counter = commands.withLock { cache in
            if let counter = cache[key] { return counter }
            let counter = registry.makeCounter(
                descriptor: Self.commandsName,
                labels: [("target", target), ("operation", Self.name(of: opcode)), ("result", Self.result(of: status))])
            cache[key] = counter
            return counter
        }
        counter.increment()
    }

    func transferred(dataIn: UInt64, dataOut: UInt64) {
        if dataIn > 0 { self.dataIn.increment(by: Int64(dataIn)) }
        if dataOut > 0 { self.dataOut.increment(by: Int64(dataOut)) }
    }

    func copied(bytes: UInt64) {
        if bytes > 0 { copiedBytes.increment(by: Int64(bytes)) }
    }

    /// Label values for the statuses the target sends; others as hex.
    static func result(of status: UInt8) -> String {
        switch status {
        case SCSIStatus.good: "good"
        case SCSIStatus.checkCondition: "check_condition"
        case SCSIStatus.reservationConflict: "reservation_conflict"
        default: "0x" + String(status, radix: 16)
        }
    }

    /// Label values for the operation codes initiators send most; others as hex.
    static func name(of opcode: UInt8) -> String {
        switch opcode {
        case 0x00: "test_unit_ready"
        case 0x03: "request_sense"
        case 0x08, 0x28, 0xA8, 0x88: "read"
        case 0x0A, 0x2A, 0xAA, 0x8A: "write"
        case 0x12: "inquiry"
        case 0x16, 0x56: "reserve"
        case 0x17, 0x57: "release"
        case 0x1A, 0x5A: "mode_sense"
        case 0x25: "read_capacity"
        case 0x2F, 0xAF, 0x8F: "verify"
        case 0x2E, 0xAE, 0x8E: "write_and_verify"
        case 0x35, 0x91: "synchronize_cache"
        case 0x41, 0x93: "write_same"
        case 0x42: "unmap"
        case 0x83: "extended_copy"
        case 0x84: "receive_copy_results"
        case 0x5E: "persistent_reserve_in"
        case 0x5F: "persistent_reserve_out"
        case 0x89: "compare_and_write"
        case 0x8B: "orwrite"
        case 0x9E: "service_action_in"
        case 0xA0: "report_luns"
        case 0xA3: "maintenance_in"
        default: "0x" + String(opcode, radix: 16)
        }
    }
}

/// The counters of every target served, made on first login.
final class ISCSIMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    private let targets = Mutex<[String: ISCSITargetCounters]>([:])

    init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    func target(_ name: String) -> ISCSITargetCounters {
        targets.withLock { cache in
            if let counters = cache[name] { return counters }
            let counters = ISCSITargetCounters(registry: registry, target: name)
            cache[name] = counters
            return counters
        }
    }
}
