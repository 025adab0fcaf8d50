import CairnTestSupport
import ISCSIProtocol
import NIOCore
import Testing

/// The reservation state machine without I/O: SPC-2 RESERVE/RELEASE, every PERSISTENT RESERVE OUT service
/// action, the conflict table of each type, PRgeneration, and the refusals' sense.
@Suite struct SCSIReservationsTests {
    typealias Outcome = SCSIReservations.Outcome
    typealias PRType = SCSIPersistentReservationType

    static let a = SCSINexus(initiatorName: "iqn.2026-12.test:a", isid: 0x23D0_0000_0001)
    static let b = SCSINexus(initiatorName: "iqn.2026-12.test:b", isid: 0x23D0_0000_0002)
    static let c = SCSINexus(initiatorName: "iqn.2026-12.test:c", isid: 0x23D0_0000_0003)
    static let read = SCSICommand.read(lba: 0, blocks: 1, fua: false)
    static let write = SCSICommand.write(lba: 0, blocks: 1, fua: false)

    static func list(key: UInt64 = 0, serviceActionKey: UInt64 = 0, flags: UInt8 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(key)
        buffer.writeInteger(serviceActionKey)
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(flags)
        buffer.writeRepeatingByte(0, count: 3)
        return buffer
    }

    static func out(_ action: UInt8, type: PRType? = nil) -> SCSICommand {
        .persistentReserveOut(action: action, scope: 0, type: type?.rawValue ?? 0, parameterLength: 24)
    }

    @discardableResult
    static func run(
        _ state: inout SCSIReservations,
        _ action: UInt8,
        _ nexus: SCSINexus,
        key: UInt64 = 0,
        serviceActionKey: UInt64 = 0,
        type: PRType? = nil,
        flags: UInt8 = 0
    ) -> Outcome {
        state.execute(
            out(action, type: type),
            parameters: list(key: key, serviceActionKey: serviceActionKey, flags: flags),
            from: nexus
        )
    }

    static func register(_ state: inout SCSIReservations, _ nexus: SCSINexus, _ key: UInt64) {
        let outcome = run(&state, SCSIReservations.OutAction.registerAndIgnoreExistingKey, nexus, serviceActionKey: key)
        #expect(outcome == .good)
    }

    static func keys(_ state: inout SCSIReservations) -> (generation: UInt32, keys: [UInt64]) {
        guard
            case .data(var data) = state.execute(
                .persistentReserveIn(action: 0, allocation: 8192),
                parameters: nil,
                from: a
            )
        else {
            Issue.record("READ KEYS failed")
            return (0, [])
        }
        let generation = data.readInteger(as: UInt32.self)!
        let length = Int(data.readInteger(as: UInt32.self)!)
        #expect(length == data.readableBytes)
        return (generation, (0..<length / 8).map { _ in data.readInteger(as: UInt64.self)! })
    }

    /// READ RESERVATION: nil when nothing is reserved, else (key, type).
    static func reservation(_ state: inout SCSIReservations) -> (key: UInt64, type: UInt8)? {
        guard
            case .data(let data) = state.execute(
                .persistentReserveIn(action: 1, allocation: 8192),
                parameters: nil,
                from: a
            )
        else {
            Issue.record("READ RESERVATION failed")
            return nil
        }
        guard data.getInteger(at: 4, as: UInt32.self) == 16 else { return nil }
        return (data.getInteger(at: 8, as: UInt64.self)!, data.getInteger(at: 21, as: UInt8.self)! & 0x0F)
    }

    // MARK: SPC-2

    @Test("RESERVE(6): the holder may reserve again and keeps every command; others get RESERVATION CONFLICT")
    func reserveExcludesOtherNexuses() {
        var state = SCSIReservations()
        #expect(state.execute(.reserve, parameters: nil, from: Self.a) == .good)
        #expect(state.execute(.reserve, parameters: nil, from: Self.a) == .good)
        #expect(state.execute(.reserve, parameters: nil, from: Self.b) == .conflict)
        for command in [Self.read, Self.write, .testUnitReady, .readCapacity10] {
            #expect(state.permits(command, from: Self.a))
            #expect(!state.permits(command, from: Self.b), "\(command)")
        }
        let mode = SCSICommand.modeSense(
            sixByte: true,
            disableBlockDescriptors: false,
            pageControl: 0,
            page: 0x3F,
            subpage: 0,
            allocation: 255
        )
        #expect(!state.permits(mode, from: Self.b))
        for command in [
            SCSICommand.inquiry(vitalProductData: false, page: 0, allocation: 36), .requestSense(allocation: 18),
            .reportLUNs(selectReport: 0, allocation: 16),
        ] {
            #expect(state.permits(command, from: Self.b))
        }
        // RELEASE from another nexus does nothing and succeeds; from the holder it ends the reservation.
        #expect(state.execute(.release, parameters: nil, from: Self.b) == .good)
        #expect(!state.permits(Self.write, from: Self.b))
        #expect(state.execute(.release, parameters: nil, from: Self.a) == .good)
        #expect(state.permits(Self.write, from: Self.b))
        #expect(state.execute(.reserve, parameters: nil, from: Self.b) == .good)
    }

    @Test("RESERVE ends with the holder's nexus and on a reset; another nexus's loss changes nothing")
    func reserveEndsOnNexusLossAndReset() {
        var state = SCSIReservations()
        _ = state.execute(.reserve, parameters: nil, from: Self.a)
        state.nexusLost(Self.b)
        #expect(state.reservation == .reserved(Self.a))
        state.nexusLost(Self.a)
        #expect(state.reservation == nil)
        _ = state.execute(.reserve, parameters: nil, from: Self.a)
        state.reset()
        #expect(state.reservation == nil)
        #expect(state == SCSIReservations())
    }

    @Test("RESERVE and persistent reservations exclude each other (CRH 0)")
    func reserveAndPersistentReservationsConflict() {
        var state = SCSIReservations()
        _ = state.execute(.reserve, parameters: nil, from: Self.a)
        // Every PERSISTENT RESERVE IN and OUT conflicts while a RESERVE is held, the holder's too.
        #expect(Self.run(&state, 6, Self.a, serviceActionKey: 1) == .conflict)
        #expect(
            state.execute(.persistentReserveIn(action: 0, allocation: 64), parameters: nil, from: Self.a) == .conflict
        )
        _ = state.execute(.release, parameters: nil, from: Self.a)
        Self.register(&state, Self.b, 7)
        // A registration, with or without a reservation, makes RESERVE and RELEASE conflict for everyone.
        #expect(state.execute(.reserve, parameters: nil, from: Self.a) == .conflict)
        #expect(state.execute(.reserve, parameters: nil, from: Self.b) == .conflict)
        #expect(state.execute(.release, parameters: nil, from: Self.b) == .conflict)
        #expect(state.reservation == nil)
    }

    // MARK: REGISTER

    @Test("REGISTER: key 0 from an unregistered nexus, the held key to change or remove it; else conflict")
    func registerChecksTheHeldKey() {
        var state = SCSIReservations()
        #expect(Self.run(&state, 0, Self.a, key: 5, serviceActionKey: 1) == .conflict)
        #expect(Self.run(&state, 0, Self.a, key: 0, serviceActionKey: 0) == .good)
        #expect(state.generation == 0)
        #expect(Self.run(&state, 0, Self.a, key: 0, serviceActionKey: 0xA) == .good)
        #expect(state.generation == 1)
        // Registered: key 0 (or any other than the held one) conflicts, as libiscsi's re-register test wants.
        #expect(Self.run(&state, 0, Self.a, key: 0, serviceActionKey: 0xB) == .conflict)
        #expect(Self.run(&state, 0, Self.a, key: 0xC, serviceActionKey: 0xB) == .conflict)
        #expect(Self.run(&state, 0, Self.a, key: 0xA, serviceActionKey: 0xB) == .good)
        #expect(Self.keys(&state) == (2, [0xB]))
        #expect(Self.run(&state, 0, Self.a, key: 0xB, serviceActionKey: 0) == .good)
        #expect(Self.keys(&state) == (3, []))
    }

    @Test("REGISTER AND IGNORE EXISTING KEY replaces whatever is held; keys are listed in registration order")
    func registerAndIgnoreReplaces() {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        #expect(Self.run(&state, 6, Self.a, key: 99, serviceActionKey: 3) == .good)
        #expect(Self.keys(&state) == (3, [3, 2]))
        #expect(Self.run(&state, 6, Self.a, key: 99, serviceActionKey: 0) == .good)
        #expect(Self.keys(&state) == (4, [2]))
    }

    @Test(
        "SPEC_I_PT, ALL_TG_PT and APTPL are refused with INVALID FIELD IN PARAMETER LIST; a short list with PARAMETER LIST LENGTH ERROR"
    )
    func unofferedFlagsAreRefused() {
        var state = SCSIReservations()
        for flags: UInt8 in [0x08, 0x04, 0x01] {
            #expect(
                Self.run(&state, 0, Self.a, serviceActionKey: 1, flags: flags) == .sense(.invalidFieldInParameterList)
            )
            #expect(
                Self.run(&state, 6, Self.a, serviceActionKey: 1, flags: flags) == .sense(.invalidFieldInParameterList)
            )
        }
        let short = state.execute(Self.out(6), parameters: ByteBuffer(bytes: [0, 1]), from: Self.a)
        #expect(short == .sense(.parameterListLengthError))
        #expect(state == SCSIReservations())
    }

    @Test("Registrations are bounded: one past the limit gets INSUFFICIENT REGISTRATION RESOURCES")
    func registrationsAreBounded() {
        var state = SCSIReservations()
        for index in 0..<SCSIReservations.maximumRegistrations {
            Self.register(&state, SCSINexus(initiatorName: "iqn.2026-12.test:\(index)", isid: 1), UInt64(index + 1))
        }
        let before = state
        #expect(Self.run(&state, 6, Self.a, serviceActionKey: 1) == .sense(.insufficientRegistrationResources))
        #expect(state == before)
    }

    // MARK: RESERVE / RELEASE / CLEAR

    @Test("RESERVE needs the nexus's registered key; the holder may repeat the same type only")
    func persistentReserveNeedsTheKey() {
        var state = SCSIReservations()
        #expect(Self.run(&state, 1, Self.a, key: 1, type: .writeExclusive) == .conflict)
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        #expect(Self.run(&state, 1, Self.a, key: 2, type: .writeExclusive) == .conflict)
        #expect(Self.run(&state, 1, Self.a, key: 1, type: .writeExclusive) == .good)
        #expect(Self.run(&state, 1, Self.a, key: 1, type: .writeExclusive) == .good)
        #expect(Self.run(&state, 1, Self.a, key: 1, type: .exclusiveAccess) == .conflict)
        #expect(Self.run(&state, 1, Self.b, key: 2, type: .writeExclusive) == .conflict)
        // RESERVE does not count as a registration change.
        #expect(state.generation == 2)
        #expect(Self.reservation(&state)! == (1, PRType.writeExclusive.rawValue))
    }

    @Test(
        "RELEASE: the holder with the reserved type ends it; another type is INVALID RELEASE; a non-holder changes nothing"
    )
    func persistentRelease() {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        _ = Self.run(&state, 1, Self.a, key: 1, type: .exclusiveAccess)
        #expect(Self.run(&state, 2, Self.b, key: 3, type: .exclusiveAccess) == .conflict)
        #expect(Self.run(&state, 2, Self.b, key: 2, type: .exclusiveAccess) == .good)
        #expect(Self.reservation(&state) != nil)
        #expect(
            Self.run(&state, 2, Self.a, key: 1, type: .writeExclusive) == .sense(.invalidReleaseOfPersistentReservation)
        )
        #expect(Self.reservation(&state) != nil)
        #expect(Self.run(&state, 2, Self.a, key: 1, type: .exclusiveAccess) == .good)
        #expect(Self.reservation(&state) == nil)
        #expect(Self.keys(&state) == (2, [1, 2]))
    }

    @Test("CLEAR removes every registration and the reservation: one generation step")
    func clearRemovesEverything() {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        _ = Self.run(&state, 1, Self.a, key: 1, type: .exclusiveAccess)
        #expect(Self.run(&state, 3, Self.c, key: 0) == .conflict)
        #expect(Self.run(&state, 3, Self.b, key: 1) == .conflict)
        #expect(Self.run(&state, 3, Self.b, key: 2) == .good)
        #expect(Self.keys(&state) == (3, []))
        #expect(state.reservation == nil)
    }

    // MARK: Conflict table

    /// SPC-4 Table 63 for READ and WRITE, as libiscsi's PersistentReserveOut access tests check it:
    /// (registered non-holder may read, may write, unregistered may read, may write).
    static let accessTable: [(PRType, Bool, Bool, Bool, Bool)] = [
        (.writeExclusive, true, false, true, false),
        (.exclusiveAccess, false, false, false, false),
        (.writeExclusiveRegistrantsOnly, true, true, true, false),
        (.exclusiveAccessRegistrantsOnly, true, true, false, false),
        (.writeExclusiveAllRegistrants, true, true, true, false),
        (.exclusiveAccessAllRegistrants, true, true, false, false),
    ]

    @Test(
        "Each type's conflicts for reads and writes from the holder, a registrant and an unregistered nexus",
        arguments: accessTable.indices
    )
    func conflictTable(_ index: Int) {
        let (type, registeredRead, registeredWrite, otherRead, otherWrite) = Self.accessTable[index]
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        #expect(Self.run(&state, 1, Self.a, key: 1, type: type) == .good)
        #expect(state.permits(Self.read, from: Self.a) && state.permits(Self.write, from: Self.a))
        #expect(state.permits(Self.read, from: Self.b) == registeredRead)
        #expect(state.permits(Self.write, from: Self.b) == registeredWrite)
        #expect(state.permits(Self.read, from: Self.c) == otherRead)
        #expect(state.permits(Self.write, from: Self.c) == otherWrite)
        // Status and reporting commands, and the reservation commands themselves, never conflict here.
        for command in [
            SCSICommand.testUnitReady, .readCapacity10, .inquiry(vitalProductData: false, page: 0, allocation: 36),
            .persistentReserveIn(action: 0, allocation: 8),
        ] {
            #expect(state.permits(command, from: Self.c))
        }
        // READ RESERVATION names the holder's key, 0 under the all-registrants types.
        #expect(Self.reservation(&state)! == (type.allRegistrants ? 0 : 1, type.rawValue))
    }

    @Test(
        "Unregistering the holder ends a single-holder reservation; an all-registrants one lasts while any registrant does",
        arguments: PRType.allCases
    )
    func ownership(_ type: PRType) {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        _ = Self.run(&state, 1, Self.a, key: 1, type: type)
        #expect(Self.run(&state, 0, Self.a, key: 1, serviceActionKey: 0) == .good)
        if type.allRegistrants {
            #expect(Self.reservation(&state)! == (0, type.rawValue))
            #expect(Self.run(&state, 2, Self.b, key: 2, type: type) == .good)
        }
        #expect(Self.reservation(&state) == nil)
    }

    @Test("Registrations and the persistent reservation survive the holder's nexus loss and a LUN reset")
    func persistentStateSurvivesNexusLoss() {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        _ = Self.run(&state, 1, Self.a, key: 1, type: .exclusiveAccess)
        let before = state
        state.nexusLost(Self.a)
        state.reset()
        #expect(state == before)
        #expect(!state.permits(Self.read, from: Self.b))
    }

    // MARK: PREEMPT

    @Test(
        "PREEMPT without a reservation removes the registrations holding the key; 0 is an invalid field; an unknown key conflicts"
    )
    func preemptRegistrations() {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        #expect(
            Self.run(&state, 4, Self.b, key: 2, serviceActionKey: 0, type: .exclusiveAccess)
                == .sense(.invalidFieldInParameterList)
        )
        #expect(Self.run(&state, 4, Self.b, key: 2, serviceActionKey: 9, type: .exclusiveAccess) == .conflict)
        #expect(Self.run(&state, 4, Self.c, key: 0, serviceActionKey: 1, type: .exclusiveAccess) == .conflict)
        #expect(Self.keys(&state) == (2, [1, 2]))
        #expect(Self.run(&state, 4, Self.b, key: 2, serviceActionKey: 1, type: .exclusiveAccess) == .good)
        #expect(Self.keys(&state) == (3, [2]))
        #expect(state.reservation == nil)
    }

    @Test("PREEMPT of the holder's key takes the reservation over with the new type")
    func preemptTheHolder() {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        Self.register(&state, Self.c, 3)
        _ = Self.run(&state, 1, Self.a, key: 1, type: .exclusiveAccess)
        // A key that is not the holder's removes that registration only.
        #expect(Self.run(&state, 4, Self.b, key: 2, serviceActionKey: 3, type: .writeExclusive) == .good)
        #expect(Self.reservation(&state)! == (1, PRType.exclusiveAccess.rawValue))
        #expect(Self.run(&state, 5, Self.b, key: 2, serviceActionKey: 1, type: .writeExclusive) == .good)
        #expect(Self.reservation(&state)! == (2, PRType.writeExclusive.rawValue))
        #expect(Self.keys(&state) == (5, [2]))
        #expect(state.permits(Self.write, from: Self.b) && !state.permits(Self.write, from: Self.a))
    }

    @Test("PREEMPT with key 0 under an all-registrants type removes every other registrant and reserves anew")
    func preemptAllRegistrants() {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        Self.register(&state, Self.c, 3)
        _ = Self.run(&state, 1, Self.a, key: 1, type: .writeExclusiveAllRegistrants)
        #expect(Self.run(&state, 4, Self.b, key: 2, serviceActionKey: 0, type: .exclusiveAccess) == .good)
        #expect(Self.keys(&state).keys == [2])
        #expect(Self.reservation(&state)! == (2, PRType.exclusiveAccess.rawValue))
    }

    // MARK: PERSISTENT RESERVE IN

    @Test("REPORT CAPABILITIES: length 8, no persistence through power loss, all six types")
    func reportCapabilities() {
        var state = SCSIReservations()
        guard
            case .data(let data) = state.execute(
                .persistentReserveIn(action: 2, allocation: 8),
                parameters: nil,
                from: Self.a
            )
        else {
            Issue.record("no data")
            return
        }
        #expect(Array(data.readableBytesView) == [0, 8, 0, 0x80, 0xEA, 0x01, 0, 0])
    }

    static func capabilities(_ state: inout SCSIReservations) -> [UInt8] {
        guard case .data(let data) = state.execute(.persistentReserveIn(action: 2, allocation: 8), parameters: nil, from: a)
        else { return [] }
        return Array(data.readableBytesView)
    }

    @Test("APTPL is refused, changing nothing, where the server cannot keep the state across a restart")
    func aptplRefusedWithoutPersistence() {
        var state = SCSIReservations()
        let outcome = Self.run(&state, SCSIReservations.OutAction.register, Self.a, serviceActionKey: 7, flags: 0x01)
        #expect(outcome == .sense(.invalidFieldInParameterList))
        #expect(state == SCSIReservations())
        #expect(state.persistent == nil)
    }

    @Test("APTPL: the last REGISTER decides; PTPL_C and PTPL_A say so; the kept state restores as it was")
    func aptplKeepsAndRestores() {
        var state = SCSIReservations(persistenceOffered: true)
        #expect(Self.capabilities(&state) == [0, 8, 0x01, 0x80, 0xEA, 0x01, 0, 0])
        Self.register(&state, Self.b, 5)
        #expect(state.persistent == nil, "APTPL not asked yet: nothing to keep")
        #expect(Self.run(&state, SCSIReservations.OutAction.register, Self.a, serviceActionKey: 7, flags: 0x01) == .good)
        #expect(Self.run(&state, SCSIReservations.OutAction.reserve, Self.a, key: 7, type: .exclusiveAccess) == .good)
        #expect(Self.capabilities(&state) == [0, 8, 0x01, 0x81, 0xEA, 0x01, 0, 0])
        let kept = state.persistent
        #expect(kept?.registrations.map(\.key) == [5, 7])
        #expect(kept?.reservation?.type == .exclusiveAccess && kept?.reservation?.holder == Self.a)
        // A restart: the same registrations, reservation, generation and PTPL_A; a RESERVE(6) never kept.
        var restored = SCSIReservations(restoring: kept!)
        #expect(restored == state)
        #expect(Self.keys(&restored).generation == Self.keys(&state).generation)
        #expect(!restored.permits(Self.read, from: Self.b))
        // Any later REGISTER without APTPL turns keeping off for the whole unit.
        #expect(Self.run(&state, SCSIReservations.OutAction.register, Self.b, key: 5, serviceActionKey: 6) == .good)
        #expect(state.persistent == nil)
        #expect(Self.capabilities(&state) == [0, 8, 0x01, 0x80, 0xEA, 0x01, 0, 0])
        // A REGISTER refused (wrong key) leaves APTPL as it was.
        #expect(Self.run(&state, SCSIReservations.OutAction.register, Self.a, key: 99, serviceActionKey: 8, flags: 0x01)
            == .conflict)
        #expect(state.persistent == nil)
    }

    @Test("READ FULL STATUS: one descriptor per registration with the holder marked and an iSCSI TransportID")
    func readFullStatus() {
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        _ = Self.run(&state, 1, Self.b, key: 2, type: .writeExclusive)
        guard
            case .data(var data) = state.execute(
                .persistentReserveIn(action: 3, allocation: 8192),
                parameters: nil,
                from: Self.a
            )
        else {
            Issue.record("no data")
            return
        }
        #expect(data.readInteger(as: UInt32.self) == 2)
        #expect(Int(data.readInteger(as: UInt32.self)!) == data.readableBytes)
        var holders: [UInt64] = []
        var names: [String] = []
        while data.readableBytes > 0 {
            let key = data.readInteger(as: UInt64.self)!
            data.moveReaderIndex(forwardBy: 4)
            if data.readInteger(as: UInt8.self)! & 1 == 1 { holders.append(key) }
            data.moveReaderIndex(forwardBy: 7)
            let length = Int(data.readInteger(as: UInt32.self)!)
            #expect(length % 4 == 0)
            var id = data.readSlice(length: length)!
            #expect(id.readInteger(as: UInt8.self) == 0x45)
            id.moveReaderIndex(forwardBy: 3)
            names.append(String(decoding: id.readableBytesView.prefix { $0 != 0 }, as: UTF8.self))
        }
        #expect(holders == [2])
        #expect(names == ["iqn.2026-12.test:a,i,0x23d000000001", "iqn.2026-12.test:b,i,0x23d000000002"])
    }

    // MARK: Parsing

    @Test(
        "PERSISTENT RESERVE IN/OUT and RESERVE/RELEASE CDBs decode; bad service actions, scopes, types and third-party fields are refused"
    )
    func parsing() throws {
        func cdb(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: 16 - bytes.count) }
        #expect(
            try SCSICommand.parse(cdb([0x5E, 0x01, 0, 0, 0, 0, 0, 0x20, 0]))
                == .persistentReserveIn(action: 1, allocation: 0x2000)
        )
        for action: UInt8 in 4..<0x20 {
            #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(cdb([0x5E, action])) }
        }
        #expect(
            try SCSICommand.parse(cdb([0x5F, 0x01, 0x03, 0, 0, 0, 0, 0, 24]))
                == .persistentReserveOut(action: 1, scope: 0, type: 3, parameterLength: 24)
        )
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(cdb([0x5F, 0x07])) }
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(cdb([0x5F, 0x01, 0x13])) }
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(cdb([0x5F, 0x01, 0x02])) }
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(cdb([0x5F, 0x04, 0x00])) }
        #expect(
            try SCSICommand.parse(cdb([0x5F, 0x00, 0x00, 0, 0, 0, 0, 0, 24]))
                == .persistentReserveOut(action: 0, scope: 0, type: 0, parameterLength: 24)
        )
        #expect(try SCSICommand.parse(cdb([0x16])) == .reserve)
        #expect(try SCSICommand.parse(cdb([0x57])) == .release)
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(cdb([0x16, 0x01])) }
        #expect(throws: SCSISense.invalidFieldInCDB) { try SCSICommand.parse(cdb([0x56, 0x10])) }
    }

    // MARK: Unit attentions owed to other registrants

    /// The notices of one PERSISTENT RESERVE OUT, which must succeed.
    static func notices(
        _ state: inout SCSIReservations, _ action: UInt8, _ nexus: SCSINexus, key: UInt64 = 0,
        serviceActionKey: UInt64 = 0, type: PRType? = nil
    ) -> [SCSIReservations.Notice] {
        let (outcome, notices) = state.run(
            out(action, type: type), parameters: list(key: key, serviceActionKey: serviceActionKey), from: nexus)
        #expect(outcome == .good)
        return notices
    }

    @Test("PREEMPT: each removed registrant is told REGISTRATIONS PREEMPTED; a changed type tells the rest RESERVATIONS RELEASED")
    func preemptNotices() {
        typealias N = SCSIReservations.Notice
        let Out = SCSIReservations.OutAction.self
        var state = SCSIReservations()
        Self.register(&state, Self.a, 1)
        Self.register(&state, Self.b, 2)
        Self.register(&state, Self.c, 3)
        Self.run(&state, Out.reserve, Self.b, key: 2, type: .writeExclusive)
        // Same type: only the preempted holder hears of it.
        #expect(
            Self.notices(&state, Out.preempt, Self.a, key: 1, serviceActionKey: 2, type: .writeExclusive)
                == [N(.registrationsPreempted, for: Self.b)])
        Self.register(&state, Self.b, 2)
        // The holder (a) is preempted with another type: a loses its registration, b and c are left
        // registered and the reservation changed under them.
        #expect(
            Self.notices(&state, Out.preempt, Self.c, key: 3, serviceActionKey: 1, type: .exclusiveAccess)
                == [N(.registrationsPreempted, for: Self.a), N(.reservationsReleased, for: Self.b)])
        // Registrations only (no reservation held by key 2).
        #expect(
            Self.notices(&state, Out.preempt, Self.c, key: 3, serviceActionKey: 2, type: .exclusiveAccess)
                == [N(.registrationsPreempted, for: Self.b)])
    }

    @Test("CLEAR tells every other registrant RESERVATIONS PREEMPTED; the sender hears nothing")
    func clearNotices() {
        var state = SCSIReservations()
        for (nexus, key) in [(Self.a, UInt64(1)), (Self.b, 2), (Self.c, 3)] { Self.register(&state, nexus, key) }
        Self.run(&state, SCSIReservations.OutAction.reserve, Self.a, key: 1, type: .exclusiveAccess)
        #expect(
            Self.notices(&state, SCSIReservations.OutAction.clear, Self.b, key: 2)
                == [.init(.reservationsPreempted, for: Self.a), .init(.reservationsPreempted, for: Self.c)])
    }

    @Test("RELEASE and a holder's unregistration tell the others RESERVATIONS RELEASED for the registrants types only")
    func releaseNotices() {
        let Out = SCSIReservations.OutAction.self
        for type in PRType.allCases {
            var state = SCSIReservations()
            Self.register(&state, Self.a, 1)
            Self.register(&state, Self.b, 2)
            Self.run(&state, Out.reserve, Self.a, key: 1, type: type)
            let released = Self.notices(&state, Out.release, Self.a, key: 1, type: type)
            #expect(released == (type.registrantsOnly ? [.init(.reservationsReleased, for: Self.b)] : []), "\(type)")

            // The holder unregisters: a registrants-only reservation ends and the others are told; an
            // all-registrants one stays with b; the others end silently.
            Self.run(&state, Out.reserve, Self.a, key: 1, type: type)
            let unregistered = Self.notices(&state, Out.register, Self.a, key: 1, serviceActionKey: 0)
            let told = type.registrantsOnly && !type.allRegistrants
            #expect(unregistered == (told ? [.init(.reservationsReleased, for: Self.b)] : []), "\(type)")
        }
    }

    // MARK: Seeded sequences

    @Test("Seeded sequences of reservation commands from three nexuses: refusals change nothing, the invariants hold")
    func seededSequences() {
        let seed = TestSeed.make()
        print("SCSIReservationsTests seed: \(seed) (CAIRN_SEED=\(seed) replays it)")
        var random = SeededGenerator(seed: seed)
        let nexuses = [Self.a, Self.b, Self.c]
        // Few keys, so that commands often name keys that are registered.
        let keys: [UInt64] = [0, 1, 2, 3]
        var state = SCSIReservations()
        for step in 0..<5000 {
            let nexus = nexuses.randomElement(using: &random)!
            let before = state
            let outcome: Outcome
            switch Int.random(in: 0..<10, using: &random) {
            case 0: outcome = state.execute(.reserve, parameters: nil, from: nexus)
            case 1: outcome = state.execute(.release, parameters: nil, from: nexus)
            case 2:
                state.nexusLost(nexus)
                continue
            default:
                let type = UInt8.random(in: 0...9, using: &random)
                let flags: UInt8 =
                    Int.random(in: 0..<20, using: &random) == 0 ? 1 << UInt8.random(in: 0..<8, using: &random) : 0
                var list = Self.list(
                    key: keys.randomElement(using: &random)!,
                    serviceActionKey: keys.randomElement(using: &random)!,
                    flags: flags
                )
                if Int.random(in: 0..<20, using: &random) == 0 { list = list.getSlice(at: 0, length: 20)! }
                let result = state.run(
                    .persistentReserveOut(
                        action: UInt8.random(in: 0...7, using: &random),
                        scope: 0,
                        type: type,
                        parameterLength: 24
                    ),
                    parameters: list,
                    from: nexus
                )
                outcome = result.outcome
                let notices = result.notices
                let registeredBefore = Set(before.registrations.map(\.nexus))
                #expect(notices.allSatisfy { $0.nexus != nexus && registeredBefore.contains($0.nexus) }, "seed \(seed)")
                switch outcome {
                case .conflict, .sense: #expect(notices.isEmpty, "step \(step), seed \(seed)")
                case .good, .data: break
                }
            }
            switch outcome {
            case .conflict, .sense:
                #expect(state == before, "step \(step), seed \(seed): a refusal changed the state")
            case .good, .data:
                break
            }
            // At most one registration per nexus; a persistent reservation only with its holder registered
            // (or, all-registrants, someone); RESERVE and registrations never together.
            #expect(Set(state.registrations.map(\.nexus)).count == state.registrations.count, "seed \(seed)")
            switch state.reservation {
            case .persistent(let type, let holder):
                #expect(
                    type.allRegistrants ? !state.registrations.isEmpty : state.key(of: holder) != nil,
                    "seed \(seed)"
                )
            case .reserved:
                #expect(state.registrations.isEmpty, "seed \(seed)")
            case nil:
                break
            }
            #expect(!state.registrations.contains { $0.key == 0 }, "seed \(seed)")
        }
    }
}
